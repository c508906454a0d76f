"""Pure, sans-I/O core shared by the controller and the speaker."""
