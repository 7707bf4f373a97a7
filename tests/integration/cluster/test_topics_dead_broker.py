"""`topics create` right after a broker died: the dead broker is skipped, not waited on."""

from leadflow.streams.local_kafka import free_port
from leadflow.streams.settings import Settings
from leadflow.streams.topics import _await_on_every_broker


def test_a_broker_that_does_not_answer_is_skipped(base_settings: Settings) -> None:
    # Until the controller fences a killed broker, the metadata still lists it; asking it
    # for the new topics would hang `leadflow topics create` and then fail it.
    nobody = f"127.0.0.1:{free_port()}"
    _await_on_every_broker(base_settings, [nobody], ["leadflow.events"], timeout=30.0)
