"""What speechkit knows about corpora: the GRID grammar the synthetic recipes speak and render."""
