"""Benchmarks. Each starts its own server from a fresh dev setup in a temp directory."""
