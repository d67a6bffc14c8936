"""Query engines over encrypted datasets: DuckDB (embedded, the default) and Spark."""
