"""Cost measurement: step time, first-token latency, peak memory and FLOPs of strategies (`covft profile`)."""
