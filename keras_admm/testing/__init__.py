"""Test helpers shipped with keras-admm: the random-architecture fuzzer."""
