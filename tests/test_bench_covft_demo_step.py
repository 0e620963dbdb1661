"""Keeps benchmarks/bench_covft_demo_step.py from rotting: it runs on a micro geometry."""


def test_benchmark_times_every_configuration_on_a_micro_geometry(benchmark_script):
    bench = benchmark_script("bench_covft_demo_step")
    results = bench.run_benchmark(
        batch=2,
        steps=2,
        warmup=1,
        world_size=40,
        image_size=32,
        llm_hidden=32,
        llm_layers=1,
        vision_hidden=32,
        vision_layers=2,
        text_encoder="random-tiny",
    )
    assert list(results["median_s"]) == list(bench.CONFIGS)
    assert all(len(v) == 2 and min(v) > 0 for v in results["times"].values())
    assert results["ratio_to_full"]["full"] == 1.0
    assert results["flop_ratio"] > 1.0 and results["context_tokens"] > 1
    table = bench.format_results(results)
    assert "covft, vectors computed once, MHA" in table and "before / after" in table
