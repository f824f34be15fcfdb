"""The storage chain: ordered steps a master brings up below (and including) its VIP.

Knows nothing of DRBD, mounts or addresses: steps implement `step.Step`; `plan` decides what
to do next (pure); `runner` carries it out as its own task and reports through the inbox.
"""
