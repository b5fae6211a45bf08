"""The training monitor (ctrl+t): the screen, its form rows and the values they hold, the
watched run, how a run is shown, and a fine-tune's preparation."""
