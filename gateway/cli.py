"""``embedding-gateway serve | check-config | embed`` (DESIGN.md section 3)."""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import logging
import os
import sys
import time
from datetime import datetime, timezone
from typing import Callable, Sequence

import httpx
import orjson

from gateway.config import ConfigError, GatewayConfig, check_workers, load_config, load_default_config

__all__ = ["exposure_warning", "main", "setup_logging"]

logger = logging.getLogger("gateway")


def _config_path(explicit: str | None) -> str | None:
    """--config, then $GATEWAY_CONFIG, then ./config.yaml if there is one; None: none of
    these, so the built-in default config applies."""
    path = explicit or os.environ.get("GATEWAY_CONFIG")
    if path:
        return path
    return "config.yaml" if os.path.exists("config.yaml") else None


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _load(path: str | None, say: Callable[[str], None] = _stderr) -> GatewayConfig | None:
    """The config at ``path``, or the built-in default (saying so, first) when None."""
    try:
        if path is None:
            config = load_default_config()
            say(
                "no config file (--config, $GATEWAY_CONFIG, ./config.yaml): using the built-in default "
                f"config (the bundled local model; usage ledger in {os.getcwd()})"
            )
            return config
        return load_config(path)
    except ConfigError as exc:
        print(f"{path or 'built-in default config'}: {len(exc.errors)} error(s) in the config:", file=sys.stderr)
        for line in exc.errors:
            print(f"  {line}", file=sys.stderr)
        return None


class _JsonFormatter(logging.Formatter):
    """One JSON object per line; an access-log record's fields are its top-level keys."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
        }
        fields = getattr(record, "access", None)
        if isinstance(fields, dict):
            line.update(fields)
        else:
            line["message"] = record.getMessage()
        if record.exc_info and record.exc_info[0] is not None:
            line["error"] = record.exc_info[0].__name__
        return orjson.dumps(line, default=str).decode()


def setup_logging(level: str, log_format: str = "text") -> None:
    if log_format == "json":
        handler = logging.StreamHandler()
        handler.setFormatter(_JsonFormatter())
        logging.basicConfig(level=level.upper(), handlers=[handler])
    else:
        logging.basicConfig(level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def exposure_warning(config: GatewayConfig, host: str) -> str | None:
    """The loud warning for an open gateway (no auth section) bound beyond loopback."""
    if config.auth is not None or _is_loopback(host):
        return None
    return (
        f"NO AUTH: serving on {host} without an auth section; anyone who can reach this "
        "address can use every model. Add auth.keys to the config."
    )


def _serve(args: argparse.Namespace) -> int:
    from gateway.server import run, startup_line

    setup_logging(args.log_level, args.log_format)
    path = _config_path(args.config)
    config = _load(path, say=logger.warning)
    if config is None:
        return 2
    host = args.host or config.server.host
    port = args.port if args.port is not None else config.server.port
    workers = args.workers if args.workers is not None else config.server.workers
    problems = check_workers(config, workers) if workers >= 1 else [f"--workers must be at least 1, not {workers}"]
    if problems:
        print(f"{config.source}: {len(problems)} error(s) in the config:", file=sys.stderr)
        for line in problems:
            print(f"  {line}", file=sys.stderr)
        return 2
    warning = exposure_warning(config, host)
    if warning is not None:
        logger.warning(warning)
    logger.info(startup_line(config, host=host, port=port, workers=workers))
    run(config, host=host, port=port, workers=workers, log_level=args.log_level, log_format=args.log_format)
    return 0


def _check(args: argparse.Namespace) -> int:
    from gateway.usage.sqlite import ledger_problem

    path = _config_path(args.path)
    config = _load(path)
    if config is None:
        return 2
    # What serve would die on that the config's own checks cannot see.
    ledger = config.usage.ledger
    problem = ledger_problem(ledger) if config.usage.enabled and ledger.startswith("sqlite:///") else None
    if problem is not None:
        print(f"{path}: 1 error(s) in the config:", file=sys.stderr)
        print(f"  usage.ledger: {problem}", file=sys.stderr)
        return 2
    for name, alias in config.models.items():
        names = ", ".join(f"{d.name} ({d.provider})" for d in alias.deployments)
        print(f"{name}: {alias.routing}: {names}")
    if config.server.workers > 1 or config.state is not None:
        state = config.state.display if config.state else "none"
        print(f"workers: {config.server.workers}; shared state: {state}")
    print(f"{config.source}: ok")
    return 0


async def _embed_once(config: GatewayConfig, model: str, texts: list[str], encoding: str | None) -> tuple[int, bytes]:
    from gateway.app import create_app

    app = create_app(config)
    body: dict[str, object] = {"model": model, "input": texts[0] if len(texts) == 1 else texts}
    if encoding:
        body["encoding_format"] = encoding
    async with app.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
            response = await client.post("/v1/embeddings", json=body)
    return response.status_code, response.content


def _embed(args: argparse.Namespace) -> int:
    setup_logging("warning")
    config = _load(_config_path(args.config))
    if config is None:
        return 2
    status, content = asyncio.run(_embed_once(config, args.model, args.text, args.encoding_format))
    sys.stdout.write(orjson.dumps(orjson.loads(content), option=orjson.OPT_INDENT_2).decode() + "\n")
    return 0 if status == 200 else 1


def _usage(args: argparse.Namespace) -> int:
    from gateway.errors import InvalidRequest
    from gateway.usage.report import LedgerError, format_usage_table, parse_since, read_usage

    config = _load(_config_path(args.config))
    if config is None:
        return 2
    if not config.usage.enabled:
        print("the usage ledger is off in this config (usage.ledger: off)", file=sys.stderr)
        return 2
    try:
        start = time.time() - parse_since(args.since) if args.since else None
        rows = read_usage(config.usage.ledger, start=start, group_by=args.by)
    except (ValueError, LedgerError) as exc:
        print(str(exc), file=sys.stderr)
        return 2
    except InvalidRequest as exc:
        print(exc.message, file=sys.stderr)
        return 2
    print(format_usage_table(rows, args.by))
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="embedding-gateway", description="An embedding gateway.")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="serve the HTTP API")
    serve.add_argument(
        "--config", help="config file (default: $GATEWAY_CONFIG, then ./config.yaml, then the built-in default)"
    )
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    serve.add_argument("--workers", type=int, help="processes sharing the port (default: server.workers, 1)")
    serve.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    serve.add_argument("--log-format", default="text", choices=["text", "json"])
    serve.set_defaults(run=_serve)
    check = commands.add_parser("check-config", help="validate a config file and exit")
    check.add_argument("path", nargs="?")
    check.set_defaults(run=_check)
    embed = commands.add_parser("embed", help="embed texts once and print the response JSON")
    embed.add_argument("--model", required=True)
    embed.add_argument("--config")
    embed.add_argument("--encoding-format", dest="encoding_format")
    embed.add_argument("text", nargs="+")
    embed.set_defaults(run=_embed)
    usage = commands.add_parser("usage", help="print usage from the ledger, grouped")
    usage.add_argument("--config")
    usage.add_argument("--since", default="24h", help="how far back: 90s, 30m, 24h, 7d, 2w (default 24h)")
    usage.add_argument("--by", default="alias", help="key, alias, deployment, user or metadata.<name>")
    usage.set_defaults(run=_usage)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    return int(args.run(args))


if __name__ == "__main__":
    sys.exit(main())
