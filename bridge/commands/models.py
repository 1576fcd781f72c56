"""``bridge models list | pull | check``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import yaml

from ..models.catalog import CatalogEntry, CatalogError, entry, load_catalog
from ..models.manifest import Manifest


def _root(args: argparse.Namespace, settings) -> Path:
    return Path(args.dir or settings.models.cache_dir)


def _here(item: CatalogEntry, manifest: Manifest) -> bool:
    return item.embedded_installed() if item.embedded else manifest.present(item.name)


def list_models(args: argparse.Namespace, settings) -> int:
    """The catalog as a table (``-v``: with repository, revision and files) or ``--json``."""
    manifest = Manifest(_root(args, settings))
    catalog = load_catalog()
    rows = []
    for item in catalog.values():
        rows.append(
            {
                "name": item.name,
                "kind": item.kind,
                "repo": item.repo,
                "revision": item.revision,
                "files": list(item.files),
                "size_mb": item.size_mb,
                "license": item.license,
                "hardware": item.hardware,
                "llm_mode": item.llm_mode,
                "source": item.source or "hub",
                "here": _here(item, manifest),
            }
        )
    for name, info in manifest.read().items():  # pulled with --repo: not in the catalog
        if name not in catalog:
            size = sum(f["size"] for f in info.get("files", {}).values()) / 1e6
            rows.append(
                {
                    "name": name,
                    "kind": "?",
                    "repo": info.get("repo"),
                    "revision": info.get("revision"),
                    "files": sorted(info.get("files", {})),
                    "size_mb": round(size),
                    "license": "",
                    "hardware": "",
                    "llm_mode": None,
                    "source": info.get("source"),
                    "here": manifest.present(name),
                }
            )
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"{'name':24} {'kind':4} {'size':>8} {'mode':10} {'here':4}  {'hardware':40} license")
    for r in rows:
        mode = r["llm_mode"] or "-"
        print(
            f"{r['name']:24} {r['kind']:4} {r['size_mb']:>5} MB {mode:10} {'yes' if r['here'] else 'no':4}  {r['hardware']:40} {r['license']}"
        )
        if args.verbose:
            origin = f"{r['repo']}@{r['revision']}" if r["repo"] else r["source"]
            print(f"{'':24} {origin}: {', '.join(r['files']) or '(package)'}")
    return 0


def _guess_settings(folder: str, files: list[str]) -> dict:
    """Config keys for a model pulled with ``--repo``, from the kind of files it has."""
    ggufs = sorted(f for f in files if f.endswith(".gguf"))
    if ggufs:
        return {"models": {"llm": f"{folder}/{ggufs[0]}"}, "agent": {"llm_mode": "chat"}}
    onnx = sorted(f for f in files if f.endswith(".onnx"))
    if onnx:
        return {"models": {"tts": f"{folder}/{onnx[0]}"}}
    if "model.bin" in files:
        return {"models": {"asr": folder}}
    return {}


def pull(args: argparse.Namespace, settings) -> int:
    """``bridge models pull NAME`` or ``--repo OWNER/NAME``; ``--from DIR`` places a copied folder."""
    from ..models.pull import PullError, pull_dir, pull_hub

    root = _root(args, settings)
    if bool(args.name) == bool(args.repo):
        print("bridge models pull: give a catalog NAME or --repo OWNER/NAME (one of them)", file=sys.stderr)
        return 2
    if args.name:
        try:
            item = entry(args.name)
        except CatalogError as exc:
            print(f"bridge models pull: {exc}", file=sys.stderr)
            return 2
        if item.embedded:
            print(f"{item.name} is embedded ({item.source}): installed with bridge, nothing to pull")
            return 0
        name, repo, revision, patterns, pinned = (
            item.name,
            item.repo,
            args.revision or item.revision,
            list(item.files),
            item.sha256,
        )
        if Manifest(root).present(name) and not args.force and not args.revision:
            print(f"{name} is already here in {root / name} (--force pulls it again)")
            _print_snippet(item.settings_for(str(root / name)))
            return 0
    else:
        repo, revision, patterns, pinned = args.repo, args.revision, args.include or ["*"], {}
        name = args.as_name or repo.split("/")[-1].lower()
        item = None
    try:
        if args.source:
            placed = pull_dir(root, name, args.source, patterns, pinned, repo=repo, revision=revision)
        else:
            placed = pull_hub(root, name, repo, revision, patterns, pinned)
    except PullError as exc:
        print(f"bridge models pull: {exc}", file=sys.stderr)
        return 1
    size = sum(f["size"] for f in placed.files.values()) / 1e6
    how = {
        "hub": "checked against the hub's sha256",
        "pinned": "checked against the catalog's sha256",
        "sums": "checked against the folder's SHA256SUMS",
        "none": "NOT checked: no sha256 to compare with",
    }[placed.checked]
    origin = f"{repo}@{placed.revision}" if not args.source else f"{args.source}"
    print(f"placed {name} in {placed.folder} from {origin}: {len(placed.files)} files, {size:.1f} MB, {how}")
    folder = str(root / name)
    _print_snippet(item.settings_for(folder) if item else _guess_settings(folder, list(placed.files)))
    return 0


def _print_snippet(keys: dict) -> None:
    if keys:
        print("use it with these settings (merge them into your config file):")
        print(yaml.safe_dump(keys, sort_keys=False).rstrip())


def check(args: argparse.Namespace, settings) -> int:
    """Load and run each configured model; exit status 1 when any is broken."""
    from .models_check import check_models, print_reports

    reports = check_models(settings)
    if args.json:
        print(json.dumps([r.as_dict() for r in reports], indent=2))
    else:
        print_reports(reports)
    return 0 if all(r.ok for r in reports) else 1


def run(args: argparse.Namespace, settings) -> int:
    """Dispatch ``bridge models ACTION``."""
    return {"list": list_models, "pull": pull, "check": check}[args.action](args, settings)


def add_parser(sub) -> argparse.ArgumentParser:
    """The ``models`` sub-command on the ``bridge`` parser."""
    p = sub.add_parser(
        "models",
        help="the model catalog: list, pull NAME | --repo OWNER/NAME [--from DIR], check (load every configured model)",
    )
    p.add_argument("action", choices=["list", "pull", "check"])
    p.add_argument("name", nargs="?", help="pull: a catalog name (bridge models list)")
    p.add_argument("--repo", metavar="OWNER/NAME", help="pull: any Hugging Face repository instead of a catalog name")
    p.add_argument(
        "--revision",
        metavar="REV",
        help="pull: commit, branch or tag (default: the catalog's pin, or the default branch)",
    )
    p.add_argument(
        "--include",
        action="append",
        metavar="PATTERN",
        help="pull --repo: only files matching this glob (repeat; default all)",
    )
    p.add_argument(
        "--as",
        dest="as_name",
        metavar="NAME",
        help="pull --repo: the folder name under models/ (default: the repository's name)",
    )
    p.add_argument(
        "--from",
        dest="source",
        metavar="DIR",
        help="pull: place the files from this folder (copied over by hand), no network",
    )
    p.add_argument("--force", action="store_true", help="pull: fetch again even if it is here")
    p.add_argument("--dir", metavar="DIR", help="the models folder (default: models.cache_dir, models/)")
    p.add_argument("--config", help="YAML merged over config/default.yaml (check: the models to load)")
    p.add_argument("--preset", help="check: lay this preset (config/presets/) under --config")
    p.add_argument("--json", action="store_true", help="list, check: JSON")
    p.add_argument("-v", "--verbose", action="store_true", help="list: repository, revision and files of each entry")
    p.set_defaults(func=_models)
    return p


def _models(args: argparse.Namespace) -> int:
    from ..config import load_settings
    from ..runtime import setup_logging

    settings = load_settings(args.config, preset=args.preset if args.action == "check" else None)
    setup_logging("WARNING")
    return run(args, settings)
