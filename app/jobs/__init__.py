"""Jobs layer: run an engine job in a spawned child process, stream its events back, cancel it."""
