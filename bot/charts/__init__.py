"""Charts: what the trends look like. `series` reads the store into chart data (no plotting library needed);
`render` draws PNGs with matplotlib's Agg backend when the optional `charts` extra is installed."""
