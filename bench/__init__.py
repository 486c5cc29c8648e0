"""Reproducible performance benchmarks for gpta-tui.

Each script measures one thing against its baseline in a single run, prints a small table and
updates its own section of BENCHMARKS.md (machine, date, versions, command, numbers):

    python -m bench.scoring     fast batched prefix scoring vs one prefix at a time
    python -m bench.training    the student's train_epoch vs a minimal PyTorch loop vs HF Trainer
    python -m bench.epoch       one full GPTA epoch on the smoke preset, by phase
    python -m bench.resume      session resume: call to the first TrainStep

Every script takes --device (auto, cpu, cuda, cuda:N), --repeats (median of N) and --no-write.
"""
