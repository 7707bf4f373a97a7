"""Pure domain logic: a state and an event in, a new state and derived events out. No I/O."""
