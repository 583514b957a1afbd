"""The ``imret`` command line. Each subcommand is one function, wired by argparse."""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

from . import __version__
from .errors import ImretError


def _eprint(*a):
    print(*a, file=sys.stderr, flush=True)


def _bbox(text: str) -> tuple[float, float, float, float]:
    try:
        vals = tuple(float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"bbox must be x0,y0,x1,y1 numbers, got {text!r}") from None
    if len(vals) != 4 or vals[2] <= vals[0] or vals[3] <= vals[1]:
        raise argparse.ArgumentTypeError(f"bbox must be x0,y0,x1,y1 with x1>x0 and y1>y0, got {text!r}")
    return vals  # type: ignore[return-value]


def _preset_from_args(args):
    from .presets import get_preset

    p = get_preset(args.preset, weights=getattr(args, "weights", None))
    if getattr(args, "index_kind", None):
        p = p.replace(index=p.index.replace(kind=args.index_kind))
    if getattr(args, "no_whitening", False):
        p = p.replace(whitening=p.whitening.replace(kind="none"))
    return p


def _skip_logger(quiet: bool):
    # Skipped files are always reported: --quiet silences progress, not problems.
    def on_error(path, reason):
        from tqdm import tqdm

        tqdm.write(f"skipped {path}: {reason}", file=sys.stderr)
    return on_error


def _write_skip_log(out: str, skipped, mode: str = "w") -> str | None:
    """Skipped files with reasons, one per line: overwritten by 'index', appended to by 'add'."""
    if not skipped:
        return None
    log = out + ".skipped.tsv"
    with open(log, mode, encoding="utf-8", errors="surrogateescape") as f:
        for p, reason in skipped:
            f.write(f"{p}\t{reason}\n")
    return log


def cmd_index(args) -> int:
    from .extractor import Extractor
    from .index.store import Index

    preset = _preset_from_args(args)
    ex = Extractor(preset, device=args.device)
    journal = args.out + ".journal"
    if os.path.exists(journal):
        _eprint(f"resuming the interrupted run recorded in {journal}")
    index, report = Index.build(args.sources, preset, extractor=ex, progress=not args.quiet,
                                on_error=_skip_logger(args.quiet), whitening_sources=args.whiten_on,
                                journal_path=journal)
    index.save(args.out)
    Index.finish_journal(journal)
    log = _write_skip_log(args.out, report.skipped)
    _eprint(f"{report.summary()}; wrote {args.out}" + (f"; skipped files listed in {log}" if log else ""))
    return 0 if report.indexed or not report.skipped else 1


def cmd_add(args) -> int:
    from .index.store import Index

    index = Index.load(args.index)
    index.extractor(device=args.device)
    journal = args.index + ".journal"
    report = index.add(args.sources, progress=not args.quiet, on_error=_skip_logger(args.quiet),
                       journal_path=journal)
    index.save(args.index)
    Index.finish_journal(journal)
    log = _write_skip_log(args.index, report.skipped, mode="a")
    _eprint(f"{report.summary()}; {len(index)} images in {args.index}" + (f"; see {log}" if log else ""))
    return 0


def cmd_remove(args) -> int:
    from .index.store import Index

    index = Index.load(args.index)
    removed = index.remove(args.paths)
    index.save(args.index)
    for p in removed:
        print(f"removed {p}")
    _eprint(f"removed {len(removed)}; {len(index)} images in {args.index}")
    return 0 if removed else 1


def cmd_search(args) -> int:
    from .index.store import Index

    index = Index.load(args.index)
    index.extractor(device=args.device)
    t0 = time.perf_counter()
    hits = index.search_image(args.query, top=args.top, bbox=args.bbox)
    ms = (time.perf_counter() - t0) * 1000
    if args.json:
        print(json.dumps({"query": args.query, "bbox": args.bbox, "ms": round(ms, 1),
                          "results": [{"rank": h.rank, "score": round(h.score, 6), "id": h.id, "path": h.path}
                                      for h in hits]}, indent=1))
        return 0
    print(f"{'rank':>4}  {'score':>7}  path")
    for h in hits:
        print(f"{h.rank:>4}  {h.score:7.4f}  {h.path}")
    _eprint(f"{len(hits)} results in {ms:.0f} ms")
    return 0


def cmd_info(args) -> int:
    from .index.store import Index

    info = Index.load(args.index).info()
    info["file_bytes"] = os.path.getsize(args.index)
    if args.json:
        print(json.dumps(info, indent=1))
        return 0
    p = info["preset"]
    w = info["whitening"]
    print(f"index       {args.index} ({info['file_bytes']:,} bytes)")
    print(f"images      {info['images']}")
    print(f"descriptor  {info['dim']}-d float32 ({info['bytes_per_image']} bytes/image)")
    print(f"preset      {p['name']}: {p['description']}")
    print(f"backbone    {p['backbone']['name']} (weights: {p['backbone']['weights'] or 'packaged'})")
    print(f"head        {p['head']['name']} {p['head']['params'] or ''}")
    print(f"scales      {', '.join(f'{s:.3g}' for s in p['extraction']['scales'])} at max side {p['extraction']['max_size']} px")
    print(f"whitening   {'PCA, %d-d, power %.2g' % (w['dim'], w['power']) if w else 'none'}")
    print(f"backend     {info['backend']}")
    return 0


def cmd_presets(args) -> int:
    from .presets import list_presets

    for p in list_presets():
        print(f"{p.name:16s} {p.description}")
    return 0


def cmd_eval(args) -> int:
    from .evaluation.datasets import load_dataset
    from .evaluation.evaluate import evaluate
    from .extractor import Extractor

    dataset = load_dataset(args.dataset, args.layout)
    ex = Extractor(_preset_from_args(args), device=args.device)
    res = evaluate(ex, dataset, whitening="none" if args.no_whitening else "auto", progress=not args.quiet)
    for p, reason in res["failures"]:
        _eprint(f"skipped {p}: {reason}")
    if args.json:
        print(json.dumps(res, indent=1, default=str))
        return 0
    print(f"{res['dataset']} ({res['protocol']}): {res['images']} images, {res['queries']} queries, "
          f"preset {ex.preset.name}{', whitened' if res['whitened'] else ''}")
    figs = res["figures"]
    if res["protocol"] == "revisited":
        print(f"{'':8s}" + "".join(f"{k:>9s}" for k in figs["easy"]))
        for split, vals in figs.items():
            print(f"{split:8s}" + "".join(f"{v:9.2f}" for v in vals.values()))
    else:
        print("  ".join(f"{k} {v:.2f}" for k, v in figs.items()))
    return 0


def cmd_demo(args) -> int:
    """Build a small set of real photos and queries, index it, search it."""
    from .evaluation.photoset import make_photoset
    from .extractor import Extractor
    from .index.store import Index

    root = args.out
    ps = make_photoset(root)
    _eprint(f"wrote {len(ps.db)} photos to {root}/db and {len(ps.queries)} altered queries to {root}/queries")
    preset = _preset_from_args(args)
    index, report = Index.build([os.path.join(root, "db")], preset, extractor=Extractor(preset, device=args.device),
                                progress=not args.quiet)
    out = os.path.join(root, "demo.index")
    index.save(out)
    _eprint(f"{report.summary()}; wrote {out}")
    correct = 0
    shown = set(args.show.split(",")) if args.show else {"crop", "paste", "viewpoint"}
    for q in ps.queries:
        hits = index.search_image(q, top=3)
        ok = bool(hits) and hits[0].path in {os.path.abspath(p) for p in ps.positives[q]}
        correct += ok
        kind = os.path.basename(q).split("__")[1].rsplit(".", 1)[0]
        if kind in shown and os.path.basename(q).split("__")[0] in ("astronaut", "coffee", "motorcycle"):
            print(f"query {os.path.relpath(q, root)}")
            for h in hits:
                print(f"  {h.rank}. {h.score:.3f}  {os.path.relpath(h.path, root)}")
    print(f"rank-1 correct for {correct} of {len(ps.queries)} queries ({100 * correct / len(ps.queries):.0f}%)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="imret", description="Instance-level image retrieval.")
    ap.add_argument("--version", action="version", version=f"imret {__version__}")
    sub = ap.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def common(p, preset=True):
        p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 … (default: cuda when available)")
        p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
        if preset:
            p.add_argument("--preset", default="default", help="named preset (see 'imret presets')")
            p.add_argument("--weights", default=None, help="local backbone checkpoint (torchvision/timm)")
            p.add_argument("--no-whitening", action="store_true", help="do not learn PCA-whitening")

    p = sub.add_parser("index", help="index the photos in folders or files")
    p.add_argument("sources", nargs="+", help="folders (searched recursively) or image files")
    p.add_argument("--out", required=True, help="index file to write")
    p.add_argument("--index-kind", choices=["auto", "flat", "hnsw", "ivfpq"], default=None)
    p.add_argument("--whiten-on", nargs="+", default=None, metavar="DIR",
                   help="learn the whitening on these photos instead of the indexed ones")
    common(p)
    p.set_defaults(func=cmd_index)

    p = sub.add_parser("search", help="search an index with a query photo")
    p.add_argument("index")
    p.add_argument("query")
    p.add_argument("--top", type=int, default=10)
    p.add_argument("--bbox", type=_bbox, default=None, help="crop the query: x0,y0,x1,y1 in pixels")
    p.add_argument("--json", action="store_true")
    common(p, preset=False)
    p.set_defaults(func=cmd_search)

    p = sub.add_parser("add", help="add photos to an index (already indexed ones are skipped)")
    p.add_argument("index")
    p.add_argument("sources", nargs="+")
    common(p, preset=False)
    p.set_defaults(func=cmd_add)

    p = sub.add_parser("remove", help="remove photos (paths, or folders) from an index")
    p.add_argument("index")
    p.add_argument("paths", nargs="+")
    p.set_defaults(func=cmd_remove)

    p = sub.add_parser("info", help="what an index holds and how it was built")
    p.add_argument("index")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("presets", help="list the named presets")
    p.set_defaults(func=cmd_presets)

    p = sub.add_parser("eval", help="evaluate a preset on a dataset in a standard layout")
    p.add_argument("--dataset", required=True, help="dataset folder")
    p.add_argument("--layout", default=None,
                   help="revisitop, classic, holidays, ukbench, instances, places, photoset (default: detect)")
    p.add_argument("--json", action="store_true")
    common(p)
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("demo", help="index a small set of real photos and search it with altered copies")
    p.add_argument("--out", default="imret-demo", help="folder to write the demo photos and index to")
    p.add_argument("--show", default=None, help=argparse.SUPPRESS)
    common(p)
    p.set_defaults(func=cmd_demo)
    return ap


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except ImretError as exc:
        _eprint(f"imret: error: {exc}")
        return 1
    except KeyError as exc:  # unknown registry names carry a full message
        _eprint(f"imret: error: {exc.args[0] if exc.args else exc}")
        return 1
    except (FileNotFoundError, NotADirectoryError, PermissionError) as exc:
        _eprint(f"imret: error: {exc}")
        return 1
    except KeyboardInterrupt:
        _eprint("imret: interrupted")
        return 130


if __name__ == "__main__":
    sys.exit(main())
