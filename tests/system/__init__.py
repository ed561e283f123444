"""System tests: real servers on loopback, Azurite, PySpark, the examples run as written."""
