"""The front door: the ``anmin`` command and the demo. Imports the other packages lazily."""
