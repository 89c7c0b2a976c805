"""wsdlab: a toolkit for Warmup-Stable-Decay learning-rate-schedule research."""

__version__ = "0.1.0"
