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


def _rerank(text: str):
    """--rerank STEPS → a re-ranking Pipeline; a bad spec is a usage error naming the problem."""
    from . import local  # noqa: F401  (registers the spatial-verification steps sv, svh)
    from .config import ConfigError
    from .rerank import Pipeline

    try:
        return Pipeline.parse(text)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _preset_from_args(args):
    from .presets import get_preset

    return _apply_overrides(get_preset(args.preset, weights=getattr(args, "weights", None)), args)


def _model_from_args(args):
    """(preset, head_state): a trained model from ``--checkpoint``, else the named preset."""
    if getattr(args, "checkpoint", None):
        from .training.checkpoint import model_from_checkpoint

        preset, head_state = model_from_checkpoint(args.checkpoint)
        return _apply_overrides(preset, args), head_state
    return _preset_from_args(args), None


def _tuning(args) -> dict:
    """The search settings of the approximate backends given on the command line."""
    return {k: getattr(args, k) for k in ("ef_search", "nprobe", "rescore") if getattr(args, k, None) is not None}


def _apply_overrides(p, args):
    if getattr(args, "index_kind", None) or getattr(args, "milvus_uri", None):
        kind = args.index_kind or ("milvus" if args.milvus_uri else p.index.kind)
        p = p.replace(index=p.index.replace(kind=kind, milvus_uri=args.milvus_uri or p.index.milvus_uri))
    if _tuning(args):
        p = p.replace(index=p.index.replace(**_tuning(args)))
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

    preset, head_state = _model_from_args(args)
    if args.adapt:
        from .training.adapt import adapt

        _eprint(f"adapting the {preset.head.name} head of {preset.name} to these photos (no labels)")
        from .training.adapt import ADAPT

        cfg = ADAPT if args.adapt_steps is None else ADAPT.replace(steps=args.adapt_steps,
                                                                   checkpoint_every=args.adapt_steps)
        res = adapt(preset, args.sources, cfg, device=args.device, progress=not args.quiet,
                    on_error=_skip_logger(args.quiet), start=head_state)
        head_state = res.head_state
    dba = None if args.dba is None else _rerank("dba" + (f":{args.dba}" if args.dba else "")).database_step
    local = args.local is not None or args.attention is not None
    if args.engine == "ray":
        return _index_with_ray(args, preset, head_state, dba, local)
    ex = Extractor(preset, device=args.device, head_state=head_state)
    journal = args.out + ".journal"
    if os.path.exists(journal):
        _eprint(f"resuming the interrupted run recorded in {journal}")
    index, report = Index.build(args.sources, preset, extractor=ex, progress=not args.quiet,
                                on_error=_skip_logger(args.quiet), whitening_sources=args.whiten_on,
                                journal_path=journal)
    if dba is not None:
        index.set_dba(dba)
    # the weights actually used (a shipped head included) are kept with the index
    index.head_state = head_state if head_state is not None else (
        ex.trained.float_state() if ex.trained is not None else None)
    if local:
        _attach_local(args, index, journal)
    index.save(args.out)
    Index.finish_journal(journal)
    log = _write_skip_log(args.out, report.skipped)
    _eprint(f"{report.summary()}; wrote {args.out}" + (f"; skipped files listed in {log}" if log else ""))
    return 0 if report.indexed or not report.skipped else 1


def _attach_local(args, index, journal: str) -> None:
    """Local features for every image of ``index`` (journaled beside ``journal``: resumable)."""
    from .index.store import Index
    from .local.commands import build_local

    local_journal = Index.local_journal_path(journal)
    if os.path.exists(local_journal):
        from .local.journal import LocalJournal

        _eprint(f"resuming the local features of {LocalJournal.count(local_journal)} images "
                f"recorded in {local_journal}")
    build_local(index, args.local or "delf", args.attention, device=args.device, progress=not args.quiet,
                on_error=_skip_logger(args.quiet), journal_path=local_journal)


def _index_with_ray(args, preset, head_state=None, dba=None, local=False) -> int:
    """Extraction spread over Ray workers in shards (resumable), then one merge. Local
    features, with ``local``, are extracted afterwards by this process (journaled)."""
    try:
        from .engines.ray_engine import RayConfig, clear_shards, extract_with_ray, merge_shards
    except ImportError as exc:
        _eprint(f"imret: error: --engine ray needs its extra: pip install 'imret[ray]' ({exc})")
        return 1
    from .extractor import Extractor
    from .index.store import Index, IndexReport, collect_paths

    t0 = time.time()
    report = IndexReport()
    record = report.failed(_skip_logger(args.quiet))
    paths = collect_paths(args.sources, on_error=record)
    cfg = RayConfig(address=args.address, workers=args.workers, shard_size=args.shard_size,
                    object_store_mb=args.object_store_mb)
    shards_dir = args.out + ".shards"
    stats = extract_with_ray(paths, preset, shards_dir, cfg, head_state=head_state, progress=not args.quiet)
    dim = Extractor(preset, device="cpu", head_state=head_state).dim
    ok, raw, failures = merge_shards(paths, shards_dir, cfg.shard_size, dim, preset, head_state)
    for p, reason in failures:
        record(p, reason)
    index = Index.from_raw(preset, dim, ok, raw, args.sources)
    if dba is not None:
        index.set_dba(dba)
    index.head_state = head_state
    if local:
        _attach_local(args, index, args.out + ".journal")
    index.save(args.out)
    Index.finish_journal(args.out + ".journal")
    clear_shards(shards_dir)
    report.indexed = len(ok)
    report.seconds = time.time() - t0
    log = _write_skip_log(args.out, report.skipped)
    _eprint(f"{report.summary()}; ray: {stats['extracted_shards']} shards extracted, "
            f"{stats['skipped_shards']} already done; wrote {args.out}" + (f"; see {log}" if log else ""))
    return 0


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
    if _tuning(args):
        index.tune(**_tuning(args))
    step = args.rerank.database_step if args.rerank else None
    if step is not None and (index.dba is None or index.dba.step != step):
        stored = f"stores {index.dba.step.spec()}" if index.dba else "stores no αDBA"
        _eprint(f"note: {args.index} {stored}; computing {step.spec()} for this search "
                f"(store it with 'imret index --dba')")
    t0 = time.perf_counter()
    hits = index.search_image(args.query, top=args.top, bbox=args.bbox, rerank=args.rerank)
    ms = (time.perf_counter() - t0) * 1000
    if args.json:
        print(json.dumps({"query": args.query, "bbox": args.bbox, "ms": round(ms, 1),
                          "rerank": str(args.rerank) if args.rerank else None,
                          "results": [{"rank": h.rank, "score": round(h.score, 6), "id": h.id, "path": h.path,
                                       **h.verification()} for h in hits]}, indent=1))
        return 0
    verified = any(h.inliers is not None for h in hits)
    print(f"{'rank':>4}  {'score':>7}  " + (f"{'inliers':>7}  " if verified else "") + "path")
    for h in hits:
        inl = "" if not verified else f"{'-' if h.inliers is None else h.inliers:>7}  "
        print(f"{h.rank:>4}  {h.score:7.4f}  {inl}{h.path}")
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
    if info.get("dba"):
        print(f"dba         αDBA rows stored, k={info['dba']['k']}, alpha={info['dba']['alpha']:g}")
    if info.get("local"):
        lo = info["local"]
        print(f"local       {lo['images']} images, ≤{lo['max_features']} features of {lo['backbone']} {lo['stage']}, "
              f"{lo['dim']}-d stored as {lo['storage']} ({lo['code_bytes']} bytes each), "
              f"scales {', '.join(f'{s:.3g}' for s in lo['scales'])} at {lo['max_size']} px")
    return 0


def cmd_presets(args) -> int:
    from .presets import list_presets, training_status

    for p in list_presets():
        print(f"{p.name:18s} {p.description}")
        status = training_status(p)
        if status:
            print(f"{'':18s}   head: {status}")
    return 0


def cmd_eval(args) -> int:
    from .evaluation.datasets import load_dataset
    from .evaluation.evaluate import evaluate
    from .extractor import Extractor
    from .local import needs_local

    dataset = load_dataset(args.dataset, args.layout)
    preset, head_state = _model_from_args(args)
    ex = Extractor(preset, device=args.device, head_state=head_state)
    local = None
    if needs_local(args.rerank):
        from .local.commands import local_extractor

        local, _ = local_extractor(args.local, args.attention, device=args.device)
    res = evaluate(ex, dataset, whitening="none" if args.no_whitening else "auto", progress=not args.quiet,
                   rerank=args.rerank, local=local)
    for p, reason in res["failures"]:
        _eprint(f"skipped {p}: {reason}")
    if args.json:
        print(json.dumps(res, indent=1, default=str))
        return 0
    print(f"{res['dataset']} ({res['protocol']}): {res['images']} images, {res['queries']} queries, "
          f"preset {ex.preset.name}{', whitened' if res['whitened'] else ''}"
          + (f", re-ranked by {res['rerank']}" if res["rerank"] else ""))
    figs = res["figures"]
    if res["protocol"] == "revisited":
        print(f"{'':8s}" + "".join(f"{k:>9s}" for k in figs["easy"]))
        for split, vals in figs.items():
            print(f"{split:8s}" + "".join(f"{v:9.2f}" for v in vals.values()))
    else:
        print("  ".join(f"{k} {v:.2f}" for k, v in figs.items()))
    return 0


def cmd_show_matches(args) -> int:
    from .local.commands import local_extractor, show_matches

    ex, store = local_extractor(args.local, args.attention, args.index, device=args.device)
    v = show_matches(args.query, args.result, args.out, ex, store, model=args.model, bbox=args.bbox)
    _eprint(f"{v.inliers} inliers of {v.tentative} tentative matches; wrote {args.out}")
    return 0


def cmd_show_attention(args) -> int:
    from .local.commands import local_extractor, show_attention

    ex, _ = local_extractor(args.local, args.attention, args.index, device=args.device)
    n = show_attention(args.image, args.out, ex)
    _eprint(f"{n} keypoints; wrote {args.out}")
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


def cmd_serve(args) -> int:
    try:
        import uvicorn

        from .service.app import ServiceConfig, create_app
    except ImportError as exc:
        _eprint(f"imret: error: the service needs its extra: pip install 'imret[serve]' ({exc})")
        return 1
    token = args.token or os.environ.get("IMRET_TOKEN") or None
    cfg = ServiceConfig(index_path=args.index, token=token, max_upload_bytes=args.max_upload_mb * 1024 * 1024,
                        device=args.device)
    app = create_app(cfg)
    mode = "read-write (token required for changes)" if token else "read-only"
    _eprint(f"serving {args.index} on http://{args.host}:{args.port}/ ({mode})")
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0


RERANK_HELP = ("re-rank the results by these steps, in order: aqe, qe, gfr, kreciprocal, and dba "
               "(first); parameters after a colon, e.g. 'dba:k=3,aqe:n=3,alpha=3'; sv (affine) or svh "
               "(homography) verifies the shortlist with local features (an index built with --local)")
LOCAL_HELP = "local-feature configuration: 'delf' (0.25-2.0 pyramid at 512 px, the default) or 'fast'"
ATTENTION_HELP = "an attention network trained by 'imret train --local' (its configuration comes with it)"


# imret train's options: TrainConfig field → help. Defaults are TrainConfig's own.
_TRAIN_OPTIONS = {
    "mode": "how DATA is read: 'unsupervised' (a folder of unlabeled photos; positives are strong "
            "augmentations of each photo), 'instances' (a sub-folder per instance), 'pairs' (DATA is a "
            "file of tab-separated query and positive paths, a query per line)",
    "loss": "'triplet', 'contrastive' (cirtorch's) or 'cross-entropy' (over instance labels)",
    "steps": "optimisation steps",
    "batch": "tuples per step (anchor, positive, hard negatives)",
    "negatives": "hard negatives per tuple",
    "margin": "loss margin (default: the loss's own)",
    "lr": "Adam learning rate",
    "weight_decay": "Adam weight decay",
    "refresh_every": "recompute the descriptor pool hard negatives are mined from every N steps",
    "views": "views per photo: the photo and views-1 strong augmentations",
    "max_size": "longest side of training views in pixels",
    "train_blocks": "also train the backbone's last N stages (default 0: frozen, feature maps cached)",
    "seed": "seed of every random choice: the same seed gives the same model (on one machine, with one "
            "thread count: other counts sum floats in another order)",
    "checkpoint_every": "write the checkpoint every N steps",
}


# imret train --local trains the DELF attention network of local features with these options.
_LOCAL_TRAIN_OPTIONS = ("mode", "steps", "batch", "lr", "weight_decay", "views", "max_size", "seed")


def _train_local(args) -> int:
    from .local.commands import train_local

    unused = [k for k in _TRAIN_OPTIONS if k not in _LOCAL_TRAIN_OPTIONS and getattr(args, k) is not None]
    if unused or args.resume:
        _eprint("imret: error: --local training takes only " + ", ".join("--" + k.replace("_", "-") for k in
                _LOCAL_TRAIN_OPTIONS) + f"; not {', '.join('--' + k.replace('_', '-') for k in unused) or '--resume'}")
        return 2
    res = train_local(args.data, args.out, {k: getattr(args, k) for k in _LOCAL_TRAIN_OPTIONS
                                            if getattr(args, k) is not None},
                      args.local, device=args.device, progress=not args.quiet, on_error=_skip_logger(args.quiet))
    n = min(20, len(res.losses))
    _eprint(f"loss {sum(res.losses[:n]) / n:.4f} over the first {n} steps, {sum(res.losses[-n:]) / n:.4f} over "
            f"the last {n}; wrote {args.out}; index with: imret index PHOTOS --out my.index --attention {args.out}")
    return 0


def cmd_train(args) -> int:
    from .training import TrainConfig, train

    if args.local is not None:
        return _train_local(args)
    cfg = TrainConfig(**{k: getattr(args, k) for k in _TRAIN_OPTIONS if getattr(args, k) is not None})
    res = train(_preset_from_args(args), cfg, args.data, out=args.out, device=args.device, resume=args.resume,
                progress=not args.quiet, on_error=_skip_logger(args.quiet))
    if res.losses:
        n = max(1, min(20, len(res.losses) // 2))
        _eprint(f"loss {sum(res.losses[:n]) / n:.4f} over the first {n} steps, "
                f"{sum(res.losses[-n:]) / n:.4f} over the last {n}")
    _eprint(f"trained {res.step} steps; wrote {args.out}; index with: imret index PHOTOS --checkpoint {args.out} "
            "--out my.index")
    return 0


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="imret", description="Instance-level image retrieval.")
    ap.add_argument("--version", action="version", version=f"imret {__version__}")
    sub = ap.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def tuning_options(p, when="saved in the index"):
        p.add_argument("--ef-search", type=int, default=None, help=f"hnsw: beam width of a search; {when}")
        p.add_argument("--nprobe", type=int, default=None, help=f"ivfpq: inverted lists visited per search; {when}")
        p.add_argument("--rescore", type=int, default=None,
                       help=f"approximate backends: candidates re-scored exactly per search "
                            f"(256 for hnsw, 1024 for ivfpq unless set); {when}")

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
    p.add_argument("--index-kind", choices=["auto", "flat", "hnsw", "hnsw-sq8", "ivfpq", "milvus"], default=None,
                   help="search structure (default: the preset's; 'auto' picks by collection size)")
    tuning_options(p)
    p.add_argument("--milvus-uri", default=None,
                   help="keep the vectors in Milvus: a Milvus Lite file (./vectors.db) or http://host:19530")
    p.add_argument("--engine", choices=["local", "ray"], default="local",
                   help="'ray': extract in shards on a Ray cluster (resumable; pip install 'imret[ray]')")
    p.add_argument("--address", default=None, help="Ray cluster address (default: start a local one)")
    p.add_argument("--workers", type=int, default=2, help="Ray extractor workers")
    p.add_argument("--shard-size", type=int, default=256, help="images per Ray shard")
    p.add_argument("--object-store-mb", type=int, default=256, help="cap of the local Ray object store")
    p.add_argument("--whiten-on", nargs="+", default=None, metavar="DIR",
                   help="learn the whitening on these photos instead of the indexed ones")
    p.add_argument("--dba", nargs="?", const="", default=None, metavar="PARAMS",
                   help="store αDBA rows (each row averaged with its k nearest rows; searches use them), "
                        "optionally with parameters, e.g. --dba k=3,alpha=3")
    p.add_argument("--checkpoint", default=None, metavar="FILE",
                   help="a model trained by 'imret train' (its preset and weights; --preset is ignored)")
    p.add_argument("--adapt", action="store_true",
                   help="first adapt the preset's attention head to these photos without labels (each photo "
                        "its own instance, augmentations as positives; a few minutes), then index with it")
    p.add_argument("--adapt-steps", type=int, default=None, metavar="N",
                   help="training steps of --adapt (default 150)")
    p.add_argument("--local", nargs="?", const="delf", default=None, metavar="CONFIG",
                   help="also extract local features (saved beside the index as OUT.local.h5) for "
                        "'imret search --rerank sv'; " + LOCAL_HELP)
    p.add_argument("--attention", default=None, metavar="FILE", help="with --local: " + ATTENTION_HELP)
    common(p)
    p.set_defaults(func=cmd_index)

    p = sub.add_parser("search", help="search an index with a query photo")
    p.add_argument("index")
    p.add_argument("query")
    p.add_argument("--top", type=int, default=10)
    p.add_argument("--bbox", type=_bbox, default=None, help="crop the query: x0,y0,x1,y1 in pixels")
    p.add_argument("--rerank", type=_rerank, default=None, metavar="STEPS", help=RERANK_HELP)
    p.add_argument("--json", action="store_true")
    tuning_options(p, "for this search (default: as the index was built)")
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
    p.add_argument("--rerank", type=_rerank, default=None, metavar="STEPS", help=RERANK_HELP)
    p.add_argument("--json", action="store_true")
    p.add_argument("--checkpoint", default=None, metavar="FILE",
                   help="a model trained by 'imret train' (its preset and weights; --preset is ignored)")
    p.add_argument("--local", default="delf", metavar="CONFIG", help="with --rerank sv: " + LOCAL_HELP)
    p.add_argument("--attention", default=None, metavar="FILE", help="with --rerank sv: " + ATTENTION_HELP)
    common(p)
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("train", help="train a preset's attention head (and optionally backbone stages)")
    p.add_argument("data", help="a folder of photos, or with --mode pairs a pairs file")
    p.add_argument("--out", required=True, metavar="FILE", help="checkpoint file to write")
    p.add_argument("--resume", action="store_true", help="continue the training in --out from its last checkpoint")
    for name, text in _TRAIN_OPTIONS.items():
        kind = str if name in ("mode", "loss") else float if name in ("margin", "lr", "weight_decay") else int
        p.add_argument("--" + name.replace("_", "-"), type=kind, default=None, help=text)
    p.add_argument("--local", nargs="?", const="delf", default=None, metavar="CONFIG",
                   help="train the attention network of local features (DELF: attention-weighted pooling, "
                        "linear classifier, cross-entropy over instances; backbone frozen) instead of a head; "
                        + LOCAL_HELP)
    common(p)
    p.set_defaults(func=cmd_train)

    def local_source(p):
        p.add_argument("--index", default=None, help="use the local features of this index (its configuration, "
                                                     "attention and PCA)")
        p.add_argument("--local", default="delf", metavar="CONFIG", help=LOCAL_HELP)
        p.add_argument("--attention", default=None, metavar="FILE", help=ATTENTION_HELP)
        p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 … (default: cuda when available)")

    p = sub.add_parser("show-matches", help="draw two photos side by side with their verified local matches")
    p.add_argument("query")
    p.add_argument("result")
    p.add_argument("--out", required=True, help="PNG file to write")
    p.add_argument("--model", choices=["affine", "homography"], default="affine", help="RANSAC model")
    p.add_argument("--bbox", type=_bbox, default=None, help="crop the query: x0,y0,x1,y1 in pixels")
    local_source(p)
    p.set_defaults(func=cmd_show_matches)

    p = sub.add_parser("show-attention", help="draw a photo's local-feature attention scores as a heat map")
    p.add_argument("image")
    p.add_argument("--out", required=True, help="PNG file to write")
    local_source(p)
    p.set_defaults(func=cmd_show_attention)

    p = sub.add_parser("serve", help="HTTP service with a search page")
    p.add_argument("index")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: loopback only)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--token", default=None,
                   help="allow adding/removing images to clients that send this token (or set IMRET_TOKEN)")
    p.add_argument("--max-upload-mb", type=int, default=20)
    p.add_argument("--device", default=None)
    p.set_defaults(func=cmd_serve)

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
