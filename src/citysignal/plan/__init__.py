"""Planning: fixed-time fallback plans (Webster per time-of-day period, green-wave offsets) as SUMO
additional files."""
