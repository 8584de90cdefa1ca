"""Encoders ``(B, T, F)`` → ``(B, T', H)``: the recurrent family and dilated convolutions."""

from speechkit.encoders import rnn  # noqa: F401  (registers plugins)
