"""The pure VRRP core: codec, timers and state machine.

Nothing in this package does I/O, logs, or reads the clock; time is always an argument.
"""
