"""The plugin's Processing algorithms, one module each."""
