"""``bridge bench models | calls | answers | bargein | turns | amd``: the benchmarks, each in its module here."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..config import load_settings
from ..runtime import run, setup_logging


def add_parser(sub) -> argparse.ArgumentParser:
    """The ``bench`` sub-command on the ``bridge`` parser."""
    bench = sub.add_parser(
        "bench",
        help="benchmarks: 'models' (ASR/LLM/TTS speed), 'calls' (latency of real SIP calls), 'answers' (conversation quality on config/eval), 'bargein' (true and false interruptions, config/bargein), 'turns' (answers at the right moment, config/eval/turns), 'amd' (person or machine, config/eval/amd)",
    )
    bench.add_argument("what", choices=["models", "calls", "answers", "bargein", "turns", "amd"])
    bench.add_argument("--config", help="YAML merged over config/default.yaml (models, answers)")
    bench.add_argument(
        "--voices",
        metavar="V,V",
        help="answers: caller voices, from piper, piper-fast, espeak, espeak-fast, text (default: the first four)",
    )
    bench.add_argument(
        "--eval", action="append", metavar="YAML", help="answers: evaluation file (repeat; default config/eval/*.yaml)"
    )
    bench.add_argument(
        "--split",
        choices=["tune", "heldout"],
        help="answers, bargein, turns, amd: only this part of the evaluation set",
    )
    bench.add_argument(
        "--late-after",
        type=float,
        default=1.0,
        metavar="S",
        help="turns: a reply later than this after the caller's speech is late",
    )
    bench.add_argument("--log-level", help="answers: log level (INFO shows every turn)")
    bench.add_argument("--runs", type=int, default=5, help="models: utterances per stage (at most 6)")
    bench.add_argument("--uri", default="sip:agent@127.0.0.1:5060", help="server to call (calls)")
    bench.add_argument("--concurrency", type=int, default=1, help="simultaneous calls (calls)")
    bench.add_argument("--turns", type=int, default=5, help="caller turns per call (calls)")
    bench.add_argument(
        "--preset",
        action="append",
        metavar="NAME",
        help="models, answers: a preset from config/presets/ (models: repeat to compare; default: the configured models)",
    )
    bench.add_argument(
        "--chart", metavar="PNG", help="models: also draw the voice-to-voice budget per preset (matplotlib)"
    )
    bench.add_argument("--json", metavar="FILE", help="also write the figures as JSON")
    bench.set_defaults(func=_bench)
    return bench


def _bench(args: argparse.Namespace) -> int:
    from . import write_json

    if args.what == "answers":
        return _bench_answers(args)
    if args.what == "bargein":
        return _bench_bargein(args)
    if args.what == "turns":
        return _bench_turns(args)
    if args.what == "amd":
        return _bench_amd(args)
    setup_logging("WARNING")
    if args.what == "models":
        return _bench_models(args)
    from .calls import bench_calls, print_calls

    result = run(bench_calls(args.uri, args.concurrency, args.turns))
    print_calls(result)
    write_json(args.json, result)
    return 0


def _bench_models(args: argparse.Namespace) -> int:
    """``bridge bench models [--preset P ...]``: one preset in this process; several, each
    in a process of its own (so that memory and loaded models do not mix)."""
    import json
    import subprocess
    import tempfile

    from . import write_json
    from .stages import bench_stages, print_stages

    presets = args.preset or [None]
    results = []
    if len(presets) == 1:
        settings = load_settings(args.config, preset=presets[0])
        results.append(bench_stages(settings, args.runs, presets[0] or "configured"))
    else:
        for preset in presets:
            with tempfile.NamedTemporaryFile(suffix=".json") as out:
                command = [
                    sys.executable,
                    "-m",
                    "bridge",
                    "bench",
                    "models",
                    "--preset",
                    preset,
                    "--runs",
                    str(args.runs),
                    "--json",
                    out.name,
                ]
                if args.config:
                    command += ["--config", args.config]
                done = subprocess.run(command, capture_output=True, text=True)
                if done.returncode == 0:
                    results.append(json.loads(Path(out.name).read_text())[0])
                else:
                    lines = done.stderr.strip().splitlines()
                    results.append({"label": preset, "error": lines[-1] if lines else f"exit status {done.returncode}"})
    print_stages(results)
    write_json(args.json, results)
    if args.chart:
        from .chart import budget_chart

        try:
            print(f"chart: {budget_chart(results, args.chart)}")
        except ValueError as exc:
            print(f"bridge bench models: no chart: {exc}", file=sys.stderr)
    return 0 if any("error" not in r for r in results) else 1


def _bench_bargein(args: argparse.Namespace) -> int:
    """``bridge bench bargein``: config/bargein's interruptions and backchannels over the agent."""
    from ..memory import limit_arenas
    from ..warmup import load_warm_engines
    from . import write_json
    from .bargein import bench_bargein, print_bargein

    settings = load_settings(args.config, preset=args.preset[0] if args.preset else None)
    setup_logging(args.log_level or "WARNING")
    limit_arenas()
    engines = load_warm_engines(settings)
    report = run(bench_bargein(settings, engines, [args.split] if args.split else None))
    print_bargein(report)
    write_json(args.json, report)
    return 0


def _bench_turns(args: argparse.Namespace) -> int:
    """``bridge bench turns``: config/eval/turns' pauses and complete turns, when the agent answers."""
    from ..evaluation.voices import DEFAULT_VOICES
    from ..warmup import load_warm_engines
    from . import write_json
    from .turns import bench_turns, print_turns

    settings = load_settings(args.config, preset=args.preset[0] if args.preset else None)
    setup_logging(args.log_level or "WARNING")
    engines = load_warm_engines(settings)
    voices = [v.strip() for v in (args.voices or ",".join(DEFAULT_VOICES)).split(",") if v.strip()]
    report = run(bench_turns(settings, engines, voices, [args.split] if args.split else None, args.late_after))
    print_turns(report)
    write_json(args.json, report)
    return 0


def _bench_amd(args: argparse.Namespace) -> int:
    """``bridge bench amd``: config/eval/amd's answers, the detector's verdicts and timing."""
    from ..evaluation.voices import DEFAULT_VOICES
    from ..warmup import load_warm_engines
    from . import write_json
    from .amd import bench_amd, print_amd

    settings = load_settings(args.config, preset=args.preset[0] if args.preset else None)
    setup_logging(args.log_level or "WARNING")
    engines = load_warm_engines(settings)
    voices = [v.strip() for v in (args.voices or ",".join(DEFAULT_VOICES)).split(",") if v.strip()]
    report = bench_amd(settings, engines, voices, [args.split] if args.split else None)
    print_amd(report)
    write_json(args.json, report)
    return 0


def _bench_answers(args: argparse.Namespace) -> int:
    from ..evaluation.report import print_report
    from ..evaluation.runner import bench_answers
    from ..evaluation.voices import DEFAULT_VOICES, VOICES
    from ..warmup import load_warm_engines
    from . import write_json

    if args.preset and len(args.preset) > 1:
        print("bridge bench answers: one --preset at a time (run it once per preset)", file=sys.stderr)
        return 2
    settings = load_settings(args.config, preset=args.preset[0] if args.preset else None)
    voices = [v.strip() for v in (args.voices or ",".join(DEFAULT_VOICES)).split(",") if v.strip()]
    unknown = [v for v in voices if v != "text" and v not in VOICES]
    if unknown:
        print(f"bridge: unknown voice {unknown[0]!r} (known: text, {', '.join(VOICES)})", file=sys.stderr)
        return 2
    setup_logging(args.log_level or "WARNING")
    from ..memory import limit_arenas

    limit_arenas()
    engines = load_warm_engines(settings)
    splits = [args.split] if args.split else None
    report = run(bench_answers(settings, engines, voices, args.eval, splits))
    m = report["models"]
    print_report(
        report,
        f"answers: {report['overall']['turns']} turns ({', '.join(voices)}) in {report['seconds']} s; "
        f"ASR {m['asr']} (beam {m['asr_beam_size']}), LLM {m['llm']}, on {m['device']}",
    )
    write_json(args.json, report)
    return 0
