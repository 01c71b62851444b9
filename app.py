"""Command line: generate | serve | bench | build-engines. Logic lives in the packages."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from engine.config import CONFIGS, SAMPLERS


def parse_size(text: str) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must look like HEIGHTxWIDTH (e.g. 128x128), got {text!r}") from None
    if h <= 0 or w <= 0:
        raise argparse.ArgumentTypeError(f"size must be positive, got {text!r}")
    return h, w


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def parse_taus(text: str) -> tuple[float, float | None]:
    try:
        parts = [float(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--lipar-tau takes SHORT or SHORT,LONG numbers, got {text!r}") from None
    if len(parts) not in (1, 2):
        raise argparse.ArgumentTypeError(f"--lipar-tau takes SHORT or SHORT,LONG, got {text!r}")
    return parts[0], (parts[1] if len(parts) == 2 else None)


MODEL_HELP = f"preset, one of: {', '.join(CONFIGS)}"
WEIGHTS_HELP = "DiT checkpoint: a .pt/.pth (self_forcing_dmd.pt) or .safetensors file, or a folder (dit.safetensors)"


def add_model_args(p: argparse.ArgumentParser) -> None:
    from lipar.config import MOTION_MODES

    p.add_argument("--model", default="tiny", help=MODEL_HELP)
    p.add_argument("--device", default="auto", help="cpu | cuda | auto")
    p.add_argument("--size", type=parse_size, default=None, help="HEIGHTxWIDTH (default: the model's)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--weights", default=None, help=WEIGHTS_HELP)
    p.add_argument("--random-weights", action="store_true", help="random weights (timing only)")
    p.add_argument(
        "--text-encoder",
        default=None,
        help="local text encoder folder: umT5 (transformers layout, or the Wan2.1-T2V-1.3B release folder) "
        "or MiniLM (`python -m train.export_minilm DIR`)",
    )
    p.add_argument("--vae", default=None, help="VAE weights file (e.g. TAEHV's taew2_1.pth; default: the preset's)")
    p.add_argument(
        "--window", default=None, help="attention window: SINKS,M (e.g. 1,6) or global[:N] (default: the preset's)"
    )
    p.add_argument("--sampler", default=None, help=f"one of: {', '.join(SAMPLERS)} (default: the preset's)")
    p.add_argument("--no-lipar", action="store_true", help="turn LIPAR pruning off")
    p.add_argument("--lipar-tau", type=parse_taus, default=None, metavar="SHORT[,LONG]")
    p.add_argument("--lipar-motion", default="off", choices=MOTION_MODES, help="camera-motion compensation")
    p.add_argument("--lipar-t2v", action="store_true", help="prune text-to-video frames from the model's outputs")


def lipar_from_args(args: argparse.Namespace):
    from lipar.config import LiparConfig

    short, long = args.lipar_tau if args.lipar_tau else (None, None)
    return LiparConfig(
        enabled=not args.no_lipar, tau_short=short, tau_long=long, motion=args.lipar_motion, t2v=args.lipar_t2v
    )


def cmd_generate(args: argparse.Namespace) -> None:
    from engine.cli_jobs import generate_video

    generate_video(
        model=args.model,
        prompt=args.prompt,
        frames=args.frames,
        out=Path(args.out),
        source=args.source,
        device=args.device,
        seed=args.seed,
        size=args.size,
        weights=args.weights,
        random_weights=args.random_weights,
        text_encoder=args.text_encoder,
        lipar=lipar_from_args(args),
        fps=args.fps,
        vae=args.vae,
        window=args.window,
        sampler=args.sampler,
    )


def cmd_serve(args: argparse.Namespace) -> None:
    import os

    from stream.config import TOKEN_ENV, WATCH_TOKEN_ENV
    from stream.server import ServerConfig, serve

    serve(
        ServerConfig(
            host=args.host,
            port=args.port,
            model=args.model,
            device=args.device,
            size=args.size,
            weights=args.weights,
            random_weights=args.random_weights,
            # prefer the environment variables: a token on the command line is visible to other users in `ps`
            token=args.token or os.environ.get(TOKEN_ENV) or None,
            watch_token=args.watch_token or os.environ.get(WATCH_TOKEN_ENV) or None,
            allowed_hosts=tuple(args.allow_host),
            allowed_origins=tuple(args.allow_origin),
        )
    )


def cmd_bench(args: argparse.Namespace) -> None:
    from engine.bench import BenchConfig, run_bench

    run_bench(
        BenchConfig(
            model=args.model,
            device=args.device,
            size=args.size,
            seed=args.seed,
            weights=args.weights,
            random_weights=args.random_weights,
            text_encoder=args.text_encoder,
            vae=args.vae,
            window=args.window,
            sampler=args.sampler,
            source=args.source,
            frames=args.frames,
            warmup=args.warmup,
            timed_passes=args.timed_passes,
            target_fps=args.target_fps,
            sweep_keep=args.sweep_keep,
            backend=args.backend,
            graph_buckets=args.graph_buckets,
            side_stream=args.side_stream == "on",
            triton=args.triton,
            out=Path(args.out),
            lipar=lipar_from_args(args),
            mask_encoder=args.mask_encoder,
            peer=Path(args.peer) if args.peer else None,
            command=" ".join(["python", "app.py", *sys.argv[1:]]),
        )
    )


def cmd_build_engines(args: argparse.Namespace) -> None:
    from build_engines.cli import build_engines

    build_engines(
        model=args.model,
        out=args.out,
        device=args.device,
        sizes=args.size,
        buckets=args.buckets,
        random_weights=args.random_weights,
        weights=args.weights,
        precision=args.precision,
        seed=args.seed,
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="app.py", description="Real-time streaming video generator with LIPAR")
    sub = parser.add_subparsers(dest="command", required=True)

    g = sub.add_parser("generate", help="write a generated (or restyled) video to an MP4 file")
    add_model_args(g)
    g.add_argument("--prompt", required=True)
    g.add_argument("--frames", type=positive_int, default=48, help="video frames to write")
    g.add_argument("--out", required=True, help="output .mp4")
    g.add_argument("--source", default=None, help="video to restyle (video-to-video); omit for text-to-video")
    g.add_argument("--fps", type=positive_int, default=16)
    g.set_defaults(func=cmd_generate)

    s = sub.add_parser("serve", help="serve the live preview page over WebRTC")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=8080)
    s.add_argument("--model", default="tiny", help=MODEL_HELP)
    s.add_argument("--device", default="auto", help="cpu | cuda | auto")
    s.add_argument("--size", type=parse_size, default=None, help="HEIGHTxWIDTH (default: the model's)")
    s.add_argument("--weights", default=None, help=WEIGHTS_HELP)
    s.add_argument("--random-weights", action="store_true", help="random weights (plumbing demos, timing)")
    s.add_argument("--token", default=None, help="required to bind beyond loopback (or $LIPAR_STREAM_TOKEN)")
    s.add_argument("--watch-token", default=None, help="watch without steering (or $LIPAR_STREAM_WATCH_TOKEN)")
    s.add_argument("--allow-host", action="append", default=[], help="a Host name to answer to (repeatable)")
    s.add_argument("--allow-origin", action="append", default=[], help="another page allowed to connect (repeatable)")
    s.set_defaults(func=cmd_serve)

    b = sub.add_parser("bench", help="latency/throughput of baseline vs LIPAR in one process")
    add_model_args(b)
    b.add_argument("--source", default=None, help="source clip (default: a procedural clip)")
    b.add_argument("--frames", type=positive_int, default=64, help="latent frames timed per run")
    b.add_argument("--warmup", type=int, default=8, help="latent frames run before timing")
    b.add_argument("--timed-passes", type=int, default=2, help="timed runs per variant, alternating ABBA")
    b.add_argument("--target-fps", type=float, default=None, help="deadline for the miss rate (video fps)")
    b.add_argument("--sweep-keep", action="store_true", help="also sweep synthetic kept ratios 100/75/50/25%%")
    b.add_argument("--backend", default="auto", help="torch | cudagraph | auto")
    b.add_argument(
        "--graph-buckets", type=positive_int, default=None, help="kept-count buckets per block of the CUDA graphs"
    )
    b.add_argument("--triton", action="store_true", help="every LIPAR Triton kernel on, split-KV attention too (CUDA)")
    b.add_argument(
        "--side-stream", choices=("on", "off"), default="on", help="decode beside the cache pass (second CUDA stream)"
    )
    b.add_argument(
        "--mask-encoder", default=None, help="a preset whose shipped frame VAE drives LIPAR's mask (e.g. tiny)"
    )
    b.add_argument("--peer", default=None, help="peer_self_forcing.json of the same device call: a 'peer' block")
    b.add_argument("--out", default="benchmarks/results/bench", help="output folder")
    b.set_defaults(func=cmd_bench)

    e = sub.add_parser("build-engines", help="export ONNX step graphs, verify them, build TensorRT engines")
    e.add_argument("--model", default="tiny", help=MODEL_HELP)
    e.add_argument("--out", default="engines", help="engine cache folder")
    e.add_argument("--device", default="auto", help="cpu | cuda | auto (TensorRT needs cuda)")
    e.add_argument("--size", type=parse_size, action="append", default=None, help="HEIGHTxWIDTH, repeatable")
    e.add_argument("--buckets", type=positive_int, nargs="+", default=None, help="kept-token counts")
    e.add_argument("--precision", default="bf16", help="bf16 | fp16 | fp32 (TensorRT)")
    e.add_argument("--weights", default=None, help=WEIGHTS_HELP)
    e.add_argument("--random-weights", action="store_true")
    e.add_argument("--seed", type=int, default=0)
    e.set_defaults(func=cmd_build_engines)
    return parser


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except (ValueError, FileNotFoundError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
