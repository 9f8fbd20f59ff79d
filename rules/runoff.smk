# The latency runoff (workflow_scripts/stages/runoff.py, docs/decision.md): per device, dataset and model, every
# engine of the matrix re-measured in config runoff.rounds interleaved rounds (a fresh runner per visit,
# rotated order), so drift hits every candidate alike; then the finalists (engines no other is shown faster
# than, on the decision's latency metric) get longer rounds up to runoff.max_rounds, interleaved in slices.
# Its between-round spread is the latency uncertainty of the summary, claims, figures and decision. One table per model, beside its ONNX export:
# rebuilding one engine re-measures that model's engines only (the comparison is between them).


rule benchmark_latency_runoff:
    input:
        data_files,
        engines=runoff_engine_files,
    output:
        runoff=paths.onnx_file("latency_runoff.parquet"),
    params:
        data_dir=data_dir,
        engines=runoff_engines,
        runoff=config["runoff"],
        benchmark=config["benchmark"],
        # The runoff retires engines by the decision's objective and tie margin (the same paired test).
        decision=lambda w: {k: config["decision"][k] for k in ("objective", "tie_margin")},
        labels=lambda w: {"dataset": w.dataset, "model": w.model, "input_size": int(w.size)},
        provenance=lambda w: {"device": w.device, "backend": "runoff"},
    # A measuring job never runs beside another job.
    threads: job_cores
    resources:
        mem_mb=config["resources"]["benchmark_latency"]["mem_mb"],
        runtime=config["resources"]["benchmark_latency"]["runtime"],
        **placement("benchmark_latency_runoff"),
    log:
        paths.log_file("benchmark_latency_runoff", "onnx"),
    conda:
        "../envs/latency_runoff.yaml"
    script:
        "../workflow_scripts/shims/benchmark_latency_runoff.py"
