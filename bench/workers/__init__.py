"""Child processes of the benchmarks: each does one side of one comparison and prints one RESULT line."""
