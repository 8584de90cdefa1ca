"""Encoders ``(B, T, F)`` → ``(B, T', H)``: the recurrent family and dilated convolutions."""

from speechkit.encoders import cells, rnn, tcn  # noqa: F401  (registers plugins)
