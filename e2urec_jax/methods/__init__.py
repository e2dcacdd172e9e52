"""One module per method; `registry` maps names to them."""
