"""Files for the local stack (the broker's Maven pom, the default policy), shipped as data."""
