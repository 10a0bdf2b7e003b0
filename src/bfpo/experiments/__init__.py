"""Experiments built on the library: the illustrative toy (section 3.4), the safety world, and the CPU demo.
They call ``bfpo.train`` to train; what they own is their data, their ground truth and their reports."""
