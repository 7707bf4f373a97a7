"""ClickHouse: migrations, the projector and every line of analytics SQL."""
