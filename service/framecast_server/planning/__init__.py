"""From a session config to a checked ``SessionPlan``: destinations, muxers, encoders, filters.

Every policy an operator sets (hosts, schemes, filters, options, limits) is applied here, before
anything reaches FFmpeg. The plan is plain data: it crosses into the encoder process as is.
"""
