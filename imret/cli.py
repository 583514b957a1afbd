"""The ``imret`` command line. Each subcommand is one function, wired by argparse."""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

from .core import __version__
from .core.errors import ImretError


def _eprint(*a):
    print(*a, file=sys.stderr, flush=True)


def _bbox(text: str) -> tuple[float, float, float, float]:
    from .core.bbox import parse_bbox

    try:
        return parse_bbox(text)
    except ImretError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _count(what: str):
    """An argparse type for 'N|auto' options (--threads, --workers)."""
    def parse(text: str):
        from .core.threads import parse_count

        try:
            return parse_count(text, what)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
    return parse


def _thread_plan(args):
    """The thread plan of this command: --threads per extraction process, --workers processes."""
    from .core.threads import plan_threads

    workers = getattr(args, "workers", None) if getattr(args, "engine", "local") == "local" else 1
    return plan_threads(args.threads, workers or 1)


def _positive_int(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number, got {text!r}") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {n}")
    return n


def _device(text: str) -> str:
    """--device: a torch device this build and machine can use, checked before any work."""
    from .cli_output import check_device

    try:
        return check_device(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _min_score(text: str) -> float:
    from .index.cutoff import check_min_score

    try:
        return check_min_score(float(text))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc) if "cut-off" in str(exc) else f"not a number: {text!r}") from None


def _rerank(text: str):
    """--rerank STEPS → a re-ranking Pipeline ('none': the string, no re-ranking, not even the
    preset's); a bad spec is a usage error naming the problem."""
    from .core.errors import ConfigError
    from .rerank import NO_RERANK, Pipeline

    if text.strip().lower() == NO_RERANK:
        return NO_RERANK
    try:
        return Pipeline.parse(text)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _preset_rerank(given, preset):
    """The pipeline a command runs: ``given`` (--rerank: a Pipeline, or 'none'), else the
    preset's own steps (None when it bundles none)."""
    from .rerank import FROM_PRESET, resolve

    return resolve(FROM_PRESET if given is None else given, preset.rerank)


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
    from .index.backends import tuning_keys

    return {k: getattr(args, k) for k in tuning_keys() if getattr(args, k, None) is not None}


def _apply_overrides(p, args):
    uri = getattr(args, "milvus_uri", None)
    if getattr(args, "index_kind", None) or uri:
        kind = args.index_kind or ("milvus" if uri else p.index.kind)
        p = p.replace(index=p.index.replace(kind=kind, milvus_uri=uri or p.index.milvus_uri))
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
    """Skipped files with reasons, one per line (TAB, newline, backslash escaped): overwritten
    by 'index', appended to by 'add'."""
    from .index.safety import tsv_field

    if not skipped:
        return None
    log = out + ".skipped.tsv"
    with open(log, mode, encoding="utf-8", errors="surrogateescape") as f:
        for p, reason in skipped:
            f.write(f"{tsv_field(p)}\t{tsv_field(reason)}\n")
    return log


def cmd_index(args) -> int:
    from .index.indexer import Indexer

    preset, head_state = _model_from_args(args)
    if not args.adapt and (args.adapt_steps is not None or args.adapt_blend is not None):
        raise ImretError(f"{'--adapt-steps' if args.adapt_steps is not None else '--adapt-blend'} "
                         "only applies with --adapt")
    if args.adapt:
        from .training.adapt import ADAPT, ADAPT_BLEND, adapt
        from .training.recipes import adapt_config

        _eprint(f"adapting the {preset.head.name} head of {preset.name} to these photos (no labels)")
        cfg = ADAPT if args.adapt_steps is None else ADAPT.replace(steps=args.adapt_steps,
                                                                   checkpoint_every=args.adapt_steps)
        cfg = adapt_config(preset.name, cfg)
        res = adapt(preset, args.sources, cfg, device=args.device, progress=not args.quiet,
                    on_error=_skip_logger(args.quiet), start=head_state,
                    blend_weight=ADAPT_BLEND if args.adapt_blend is None else args.adapt_blend)
        if res.mined:
            _eprint(str(res.mined))
        head_state = res.head_state
    dba = None if args.dba is None else _rerank("dba" + (f":{args.dba}" if args.dba else "")).database_step
    gfr = None if getattr(args, "gfr", None) is None else _rerank("gfr" + (f":{args.gfr}" if args.gfr else "")).steps[0]
    indexer = Indexer(preset, head_state, device=args.device, dba=dba, gfr=gfr, local=args.local,
                      attention=args.attention, progress=not args.quiet, on_error=_skip_logger(args.quiet),
                      threads=_thread_plan(args))
    if args.engine == "ray":
        return _index_with_ray(args, indexer)
    if os.path.exists(Indexer.journal_of(args.out)):
        _eprint(f"resuming the interrupted run recorded in {Indexer.journal_of(args.out)}")
    _note_local_journal(args.out)
    index, report = indexer.build(args.sources, args.out, whitening_sources=args.whiten_on)
    log = _write_skip_log(args.out, report.skipped)
    _eprint(f"{report.summary()}; wrote {args.out}" + (f"; skipped files listed in {log}" if log else ""))
    _print_notes(index, index.extractor(), args)
    return 0 if report.indexed or not report.skipped else 1


def _print_notes(index, extractor, args) -> None:
    from .cli_output import build_notes

    for note in build_notes(index, extractor, _tuning(args)):
        _eprint(f"note: {note}")


def _note_local_journal(out: str) -> None:
    from .index.indexer import Indexer

    local_journal = Indexer.local_journal_of(out)
    if os.path.exists(local_journal):
        from .local.journal import LocalJournal

        _eprint(f"resuming the local features of {LocalJournal.count(local_journal)} images "
                f"recorded in {local_journal}")


def _index_with_ray(args, indexer) -> int:
    """Extraction spread over Ray workers in shards (resumable), then one merge. Local
    features, when asked for, are extracted afterwards by this process (journaled)."""
    try:
        from .engines.ray_engine import RayConfig, clear_shards, extract_with_ray, merge_shards
    except ImportError as exc:
        _eprint(f"imret: error: --engine ray needs its extra: pip install 'imret[ray]' ({exc})")
        return 1
    from .core.threads import plan_threads

    workers = 2 if args.workers is None else plan_threads(1, args.workers).workers if args.workers == "auto" \
        else args.workers
    cfg = RayConfig(address=args.address, workers=workers, shard_size=args.shard_size,
                    object_store_mb=args.object_store_mb)
    shards_dir = args.out + ".shards"
    stats = {}

    def from_ray(paths, extractor):
        stats.update(extract_with_ray(paths, indexer.preset, shards_dir, cfg, head_state=indexer.head_state,
                                      progress=indexer.progress))
        return merge_shards(paths, shards_dir, cfg.shard_size, extractor.dim, indexer.preset, indexer.head_state)

    _note_local_journal(args.out)
    index, report = indexer.build(args.sources, args.out, raw_source=from_ray)
    clear_shards(shards_dir)
    log = _write_skip_log(args.out, report.skipped)
    _eprint(f"{report.summary()}; ray: {stats['extracted_shards']} shards extracted, "
            f"{stats['skipped_shards']} already done; wrote {args.out}" + (f"; see {log}" if log else ""))
    _print_notes(index, None, args)
    return 0


def cmd_add(args) -> int:
    from .index.indexer import Indexer

    index, report = Indexer.add(args.index, args.sources, device=args.device, progress=not args.quiet,
                                on_error=_skip_logger(args.quiet))
    log = _write_skip_log(args.index, report.skipped, mode="a")
    _eprint(f"{report.summary()}; {len(index)} images in {args.index}" + (f"; see {log}" if log else ""))
    from .index.safety import add_exit_code

    return add_exit_code(report)


def cmd_remove(args) -> int:
    from .cli_output import not_matched
    from .index.safety import needs_save
    from .index.store import Index

    index = Index.load(args.index)
    removed = index.remove(args.paths)
    missing = not_matched(args.paths, removed)
    for p in missing:
        _eprint(f"not in {args.index}: {p}")
    if removed or needs_save(index):  # a save also drops local entries of removed images
        index.save(args.index)
    for p in removed:
        print(f"removed {p}")
    _eprint(f"removed {len(removed)}; {len(index)} images in {args.index}")
    return 0 if removed and not missing else 1


def cmd_search(args) -> int:
    from .index.store import Index

    from .cli_output import unused_tuning

    index = Index.load(args.index)
    if args.min_score is None:
        args.min_score = index.preset.min_score
    unused = unused_tuning(index.backend.name, _tuning(args))
    if unused:
        _eprint(f"imret search: error: {unused}")
        return 2
    index.extractor(device=args.device)
    if _tuning(args):
        index.tune(**_tuning(args))
    args.rerank = _preset_rerank(args.rerank, index.preset)
    step = args.rerank.database_step if args.rerank else None
    if step is not None and (index.dba is None or index.dba.step != step):
        stored = f"stores {index.dba.step.spec()}" if index.dba else "stores no αDBA"
        _eprint(f"note: {args.index} {stored}; computing {step.spec()} for this search "
                f"(store it with 'imret index --dba')")
    t0 = time.perf_counter()
    if args.mode == "global":
        hits = index.search_image(args.query, top=args.top, bbox=args.bbox, rerank=args.rerank)
    else:  # local features alone (hook: imret.local.search)
        from .index.local_modes import search_index

        hits = search_index(index, args.query, args.mode, top=args.top, path=args.index, bbox=args.bbox)
    ms = (time.perf_counter() - t0) * 1000
    from .cli_output import results_table
    from .index.cutoff import hit_fields, no_match_message

    if args.json:
        print(json.dumps({"query": args.query, "bbox": args.bbox, "ms": round(ms, 1),
                          "rerank": str(args.rerank) if args.rerank else None, "min_score": args.min_score,
                          "results": [hit_fields(h, args.min_score, args.matches) for h in hits]}, indent=1))
        return 0
    print("\n".join(results_table(hits, args.min_score)))
    verify = [s for s in (args.rerank.steps if args.rerank else ()) if hasattr(s, "min_inliers")]
    if verify:
        _eprint(f"inliers: RANSAC-consistent local matches; 'ok' verifies the result (at least "
                f"{verify[-1].min_inliers}), 'low' does not")
    none = no_match_message(hits, args.min_score)
    _eprint(f"{len(hits)} results in {ms:.0f} ms; a match: cosine at least {args.min_score:.2f}"
            + (" or verified" if verify else "") + (f"\n{none}" if none else ""))
    return 0


def cmd_info(args) -> int:
    from .index.store import Index

    from .cli_output import info_lines

    index = Index.load(args.index)
    info = index.info()
    info["file_bytes"] = os.path.getsize(args.index)
    info["head_trained"] = bool(index.head_state)
    if args.json:
        print(json.dumps(info, indent=1))
        return 0
    print("\n".join(info_lines(info, args.index)))
    return 0


def cmd_presets(args) -> int:
    from .backbones.tuned import tuned_status
    from .config import DEFAULT_MIN_SCORE
    from .core.steptext import parse_steps
    from .heads.trained import learnable, shipped_for, training_status
    from .presets import get_preset, list_presets

    def head_word(p) -> str:
        return ("trained" if shipped_for(p) is not None else "untrained") if learnable(p) else ""

    if not args.names:  # one line each: what a newcomer chooses between
        rows = [(p.name, head_word(p), f"{p.min_score:.2f}",
                 ",".join(s.name for s in parse_steps(p.rerank)) if p.rerank else "", p.description)
                for p in list_presets()]
        head = ("preset", "head", "cut-off", "re-ranks", "what")
        widths = [max(len(r[i]) for r in rows + [head]) for i in range(4)]
        for r in [head] + rows:
            print("  ".join(c.ljust(w) for c, w in zip(r, widths)) + "  " + r[4])
        print("\nhead: 'trained' ships trained weights, 'untrained' has none, blank has nothing to learn; "
              "cut-off: the cosine from which a result is a match; 'imret presets NAME' tells how each part "
              "was trained.")
        return 0
    for p in [get_preset(n) for n in args.names]:  # every name checked before any is described
        print(f"{p.name}: {p.description}")
        for part, status in (("backbone", tuned_status(p.backbone)), ("head", training_status(p))):
            if status:
                print(f"  {part}: {status}")
        if p.rerank:
            print(f"  re-ranking: {p.rerank} (searches run it unless --rerank says otherwise)")
        print(f"  a match from cosine {p.min_score:g}" + (
            f" (calibrated for this preset; most take {DEFAULT_MIN_SCORE:g})" if p.min_score != DEFAULT_MIN_SCORE else ""))
    return 0


def cmd_eval(args) -> int:
    from .evaluation.datasets import load_dataset
    from .evaluation.evaluate import build_index, evaluate_index
    from .local import needs_local

    dataset = load_dataset(args.dataset, args.layout)
    from_preset = args.rerank is None
    if args.index:  # score the searches of an existing index, of any backend
        from .index.store import Index

        index, skipped = Index.load(args.index), []
        index.extractor(device=args.device)
        args.rerank = _preset_rerank(args.rerank, index.preset)
    else:  # the database indexed in memory, as 'imret index' would
        from .extractor import Extractor

        preset, head_state = _model_from_args(args)
        args.rerank = _preset_rerank(args.rerank, preset)
        ex = Extractor(preset, device=args.device, head_state=head_state)
        local = None
        if needs_local(args.rerank):
            from .local.commands import local_extractor

            local, _ = local_extractor(args.local, args.attention, device=args.device)
        index, skipped = build_index(ex, dataset, preset, progress=not args.quiet, local=local)
    if _tuning(args):
        index.tune(**_tuning(args))
    res = evaluate_index(index, dataset, rerank=args.rerank, failures=skipped)
    for p, reason in res["failures"]:
        _eprint(f"skipped {p}: {reason}")
    _eval_notes(index.extractor(), res, args)
    if args.json:
        print(json.dumps(res, indent=1, default=str))
        return 0
    print(f"{res['dataset']} ({res['protocol']}): {res['images']} images, {res['queries']} queries, "
          f"preset {index.preset.name}, {res['backend']}{_WHITENING_WORDS[res['whitening']]}"
          + (f", re-ranked by {res['rerank']}" + (" (the preset's; --rerank none for none)" if from_preset else "")
             if res["rerank"] else ""))
    figs = res["figures"]
    if res["protocol"] == "revisited":
        print(f"{'':8s}" + "".join(f"{k:>9s}" for k in figs["easy"]))
        for split, vals in figs.items():
            print(f"{split:8s}" + "".join(f"{v:9.2f}" for v in vals.values()))
    else:
        print("  ".join(f"{k} {v:.2f}" for k, v in figs.items()))
    return 0


_WHITENING_WORDS = {"pca": ", PCA-whitened", "center": ", centred", "none": ""}


def _eval_notes(ex, res, args) -> None:
    from .cli_output import head_is_untrained

    w = ex.preset.whitening
    if w.kind == "pca" and not args.no_whitening and res["whitening"] != "pca":
        _eprint(f"note: whitening skipped: learned from {w.min_images} database images on, this dataset has "
                f"{res['images']}" + ("; descriptors centred on the database mean instead"
                                      if res["whitening"] == "center" else ""))
    if head_is_untrained(ex.head, ex.preset.head, ex.backbone.out_channels):
        _eprint(f"note: head {ex.preset.head.name!r} of preset {ex.preset.name!r} is untrained: these are the "
                "figures of its starting weights (train it with 'imret train', evaluate with --checkpoint)")


def cmd_show_matches(args) -> int:
    from .local.commands import local_extractor, show_matches

    index = None
    if args.index:  # its stored features, as 'imret search --rerank sv' compares them
        from .index.store import Index

        index = Index.load(args.index)
        store = index.local_store()
        ex = store.extractor(args.device)
    else:
        ex, store = local_extractor(args.local, args.attention, device=args.device)
    v = show_matches(args.query, args.result, args.out, ex, store, index, model=args.model, bbox=args.bbox)
    _eprint(f"query {args.query} (left) against {args.result} (right): {v.inliers} inliers of {v.tentative} "
            f"tentative matches; wrote {args.out}")
    return 0


def cmd_match(args) -> int:
    import numpy as np

    from .local.commands import local_extractor, match_pair, transform_3x3

    ex, store = local_extractor(args.local, args.attention, args.index, device=args.device)
    v = match_pair(ex.load(args.first), ex.load(args.second), ex, store, model=args.model)
    h = transform_3x3(v)
    if args.json:
        print(json.dumps({"first": args.first, "second": args.second, "model": args.model,
                          "inliers": v.inliers, "tentative": v.tentative,
                          "transform": None if h is None else np.round(h, 9).tolist(),
                          "matches": np.round(v.inlier_points.astype(np.float64), 1).tolist()}, indent=1))
        return 0
    print(f"{v.inliers} inliers of {v.tentative} tentative matches ({args.model})")
    if h is not None:
        print("\n".join("  ".join(f"{x:12.6g}" for x in row) for row in h))
    return 0


def cmd_show_attention(args) -> int:
    from .local.commands import local_extractor, show_attention

    ex, _ = local_extractor(args.local, args.attention, args.index, device=args.device)
    n = show_attention(args.image, args.out, ex)
    _eprint(f"{n} keypoints; wrote {args.out}")
    return 0


def cmd_demo(args) -> int:
    """Build a small set of real photos and altered queries, index it, search it, report."""
    from .evaluation.demo import report_lines, run_demo
    from .evaluation.photoset import make_photoset
    from .extractor import Extractor
    from .index.store import Index

    root = args.out
    ps = make_photoset(root)
    _eprint(f"wrote {len(ps.db)} photos to {root}/db and {len(ps.queries)} altered queries to {root}/queries")
    preset = _preset_from_args(args)
    ex = Extractor(preset, device=args.device)
    index, report = Index.build([os.path.join(root, "db")], preset, extractor=ex, progress=not args.quiet)
    out = os.path.join(root, "demo.index")
    index.save(out)
    _eprint(f"{report.summary()}; wrote {out}")
    _print_notes(index, ex, args)
    _eprint(f"searching with each of the {len(ps.queries)} altered queries…")
    outcomes = run_demo(index, ps, progress=not args.quiet)
    print("\n".join(report_lines(outcomes, root, out)))
    return 0


def cmd_serve(args) -> int:
    try:
        import uvicorn

        from .service.app import ServiceConfig, create_app
    except ImportError as exc:
        _eprint(f"imret: error: the service needs its extra: pip install 'imret[serve]' ({exc})")
        return 1
    token = args.token or os.environ.get("IMRET_TOKEN") or None
    from .service.limits import allowed_hosts_for

    cfg = ServiceConfig(index_path=args.index, token=token, max_upload_bytes=args.max_upload_mb * 1024 * 1024,
                        device=args.device, allowed_hosts=allowed_hosts_for(args.host, args.allowed_hosts or ()))
    app = create_app(cfg)
    mode = "read-write (token required for changes)" if token else "read-only"
    _eprint(f"serving {args.index} on http://{args.host}:{args.port}/ ({mode})")
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0


RERANK_HELP = ("re-rank the results by these steps, in order: aqe, qe, gfr, kreciprocal, and dba "
               "(first); parameters after a colon, e.g. 'dba:k=3,aqe:n=3,alpha=3'; sv (affine) or svh "
               "(homography) verifies the shortlist with local features (an index built with --local); "
               "default: the preset's own steps ('imret presets'; most presets have none), 'none' for none")
LOCAL_HELP = ("local-feature configuration: 'delf' (the default: 0.25-2.0 pyramid over the photo's own pixels up "
              "to 1024 px, distance matching, affine RANSAC, inlier scores), 'delf-512' (the same pyramid at 512 px, "
              "ratio + mutual matching), 'delf-96' (as 'delf' with 96-d float16 descriptors: better local-only search, "
              "6x the bytes) or 'fast'")
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
    "attention_lr": "learning rate of the head's input-independent attention weights (ICSA's, IA's; default: --lr)",
    "weight_decay": "Adam weight decay",
    "refresh_every": "recompute the descriptor pool hard negatives are mined from every N steps",
    "views": "views per photo: the photo and views-1 strong augmentations",
    "max_size": "longest side of training views in pixels",
    "train_blocks": "also train the backbone's last N stages (default 0: frozen); the maps entering them are cached",
    "seed": "seed of every random choice: the same seed gives the same model (on one machine, with one "
            "thread count: other counts sum floats in another order)",
    "checkpoint_every": "write the checkpoint every N steps",
    "mine": "also count as one instance the photos whose local features verify against each other (each photo is "
            "verified against its 20 nearest by the head's descriptor; no label is read): positives across "
            "viewpoints, not only augmentations of one photo",
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


# What 'imret train' trains without --preset: a head with something to learn (GeM, the
# default preset's, has none).
TRAIN_PRESET = "lite0-dagf"


def cmd_train(args) -> int:
    from .training import TrainConfig, train

    if args.local is not None:
        if args.from_shipped:
            raise ImretError("--from-shipped starts a preset's head from its shipped weights; --local trains the "
                             "local features' attention, give one of them")
        return _train_local(args)
    given = {k: getattr(args, k) for k in _TRAIN_OPTIONS if getattr(args, k) is not None}
    if args.resume and os.path.exists(args.out):
        # the checkpoint names its preset and settings: the command need not repeat them
        from .training.checkpoint import load_checkpoint

        ck = load_checkpoint(args.out)
        preset = _preset_from_args(args) if args.preset else ck.preset
        cfg = ck.train.replace(**given)
    else:
        args.preset = args.preset or TRAIN_PRESET
        preset, cfg = _preset_from_args(args), TrainConfig(**given)
    start = None
    if args.from_shipped:  # a resumed run still continues from its checkpoint
        from .heads.trained import shipped_for

        shipped = shipped_for(preset)
        if shipped is None:
            raise ImretError(f"--from-shipped: preset {preset.name!r} ships no trained head for this backbone and "
                             "head (see 'imret presets')")
        start = shipped.float_state()
    res = train(preset, cfg, args.data, out=args.out, device=args.device, resume=args.resume,
                progress=not args.quiet, on_error=_skip_logger(args.quiet), start=start)
    if res.mined:
        _eprint(str(res.mined))
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

    from .core.registry import BACKENDS
    from .index.backends import tuning_help, tuning_keys

    def tuning_options(p, when="saved in the index"):
        for key in tuning_keys():
            p.add_argument("--" + key.replace("_", "-"), type=int, default=None, help=f"{tuning_help(key)}; {when}")

    def threads_option(p):
        p.add_argument("--threads", type=_count("threads"), default="auto", metavar="N|auto",
                       help="torch threads per extraction process (default 'auto': the CPUs this process may "
                            "use by its affinity and cgroup quota, less one for decoding from 3 up, shared "
                            "between --workers; never more than those CPUs)")

    def common(p, preset=True, default: str | None = "default", shown: str = ""):
        p.add_argument("--device", type=_device, default=None, help="cpu, cuda, cuda:1 … (default: cuda when available)")
        threads_option(p)
        p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
        if preset:
            p.add_argument("--preset", default=default, help=f"named preset (see 'imret presets'; default: {default or shown})")
            p.add_argument("--weights", default=None, help="local backbone checkpoint (torchvision/timm)")
            p.add_argument("--no-whitening", action="store_true", help="do not learn PCA-whitening or centring")

    p = sub.add_parser("index", help="index the photos in folders or files")
    p.add_argument("sources", nargs="+", help="folders (searched recursively) or image files")
    p.add_argument("--out", required=True, help="index file to write")
    p.add_argument("--index-kind", choices=["auto", *BACKENDS.names()], default=None,
                   help="search structure (default: the preset's; 'auto' picks by collection size)")
    tuning_options(p)
    p.add_argument("--milvus-uri", default=None,
                   help="keep the vectors in Milvus: a Milvus Lite file (./vectors.db) or http://host:19530")
    p.add_argument("--engine", choices=["local", "ray"], default="local",
                   help="'ray': extract in shards on a Ray cluster (resumable; pip install 'imret[ray]')")
    p.add_argument("--address", default=None, help="Ray cluster address (default: start a local one)")
    p.add_argument("--workers", type=_count("workers"), default=None, metavar="N|auto",
                   help="extraction processes, each with --threads threads (default 1; 'auto': by the CPUs "
                        "this process may use); with --engine ray: Ray extractor workers (default 2)")
    p.add_argument("--shard-size", type=int, default=256, help="images per Ray shard")
    p.add_argument("--object-store-mb", type=int, default=256, help="cap of the local Ray object store")
    p.add_argument("--whiten-on", nargs="+", default=None, metavar="DIR",
                   help="learn the whitening on these photos instead of the indexed ones")
    p.add_argument("--dba", nargs="?", const="", default=None, metavar="PARAMS",
                   help="store αDBA rows (each row averaged with its k nearest rows; searches use them), "
                        "optionally with parameters, e.g. --dba k=3,alpha=3")
    p.add_argument("--gfr", nargs="?", const="", default=None, metavar="PARAMS",
                   help="store global-feature re-ranking's database side (each image updated from its k nearest "
                        "images of the whole index; '--rerank gfr' with the same k, alpha, weights, self_weight "
                        "uses it), optionally with parameters, e.g. --gfr k=3")
    p.add_argument("--checkpoint", default=None, metavar="FILE",
                   help="a model trained by 'imret train' (its preset and weights; --preset is ignored)")
    p.add_argument("--adapt", action="store_true",
                   help="first adapt the preset's attention head to these photos without labels (a photo's "
                        "positives: its augmentations and the photos its local features verify against; a few "
                        "minutes), then index with it")
    p.add_argument("--adapt-steps", type=int, default=None, metavar="N",
                   help="training steps of --adapt (default 150)")
    p.add_argument("--adapt-blend", type=float, default=None, metavar="W",
                   help="how far --adapt moves the head from its trained start towards the adapted weights: "
                        "1 keeps the adapted head whole (default 0.5: halfway, fixed before it was measured; "
                        "docs/attention-heads.md gives both)")
    p.add_argument("--local", nargs="?", const="delf", default=None, metavar="CONFIG",
                   help="also extract local features (saved beside the index as OUT.local.h5) for "
                        "'imret search --rerank sv'; " + LOCAL_HELP)
    p.add_argument("--attention", default=None, metavar="FILE", help="with --local: " + ATTENTION_HELP)
    common(p)
    p.set_defaults(func=cmd_index)

    p = sub.add_parser("search", help="search an index with a query photo")
    p.add_argument("index")
    p.add_argument("query")
    p.add_argument("--top", type=_positive_int, default=10, help="how many results (default 10)")
    p.add_argument("--bbox", type=_bbox, default=None, help="crop the query: x0,y0,x1,y1 in pixels")
    p.add_argument("--rerank", type=_rerank, default=None, metavar="STEPS", help=RERANK_HELP)
    p.add_argument("--mode", choices=["global", "local", "asmk"], default="global",
                   help="global descriptors (default); 'local': votes of every stored local descriptor, then "
                        "verification, score = inliers; 'asmk': the asmk package's ASMK over the local features "
                        "(codebook learned on the index, saved as INDEX.asmk.npz); both need 'imret index --local'")
    p.add_argument("--json", action="store_true")
    p.add_argument("--min-score", type=_min_score, default=None, metavar="COSINE",
                   help="results below this cosine (and not verified by sv) are not matches; "
                        "default: the index's preset's (0.75 for 'default', 0.55 for 'lite0-gem-tuned'; "
                        "'imret presets' lists them; see benchmarks/bench_min_score.py)")
    p.add_argument("--matches", action="store_true",
                   help="with --json and --rerank sv: also the inlier match coordinates")
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

    p = sub.add_parser("presets", help="list the named presets (one line each); with names, how each was trained")
    p.add_argument("names", nargs="*", metavar="NAME", help="presets to describe in full")
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
    p.add_argument("--index", default=None, metavar="FILE",
                   help="score the searches of this index (it holds the dataset's database; any backend; "
                        "its preset, stored αDBA and local features are used) instead of indexing in memory")
    p.add_argument("--index-kind", choices=["auto", *BACKENDS.names()], default=None,
                   help="without --index: the search structure of the index built in memory")
    tuning_options(p, "for this evaluation")
    common(p)
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("train", help="train a preset's attention head (and optionally backbone stages)")
    p.add_argument("data", help="a folder of photos, or with --mode pairs a pairs file")
    p.add_argument("--out", required=True, metavar="FILE", help="checkpoint file to write")
    p.add_argument("--resume", action="store_true", help="continue the training in --out from its last checkpoint")
    p.add_argument("--from-shipped", action="store_true",
                   help="start from the preset's shipped trained head rather than its untrained one (a NetVLAD "
                        "head then keeps the shipped clusters, fit on none of your photos, instead of clusters "
                        "fit on DATA, which cost the places they were fit on)")
    for name, text in _TRAIN_OPTIONS.items():
        if name == "mine":  # the one switch: given or not
            p.add_argument("--mine", action="store_const", const=True, default=None, help=text)
            continue
        floats = ("margin", "lr", "attention_lr", "weight_decay")
        kind = str if name in ("mode", "loss") else float if name in floats else int
        p.add_argument("--" + name.replace("_", "-"), type=kind, default=None, help=text)
    p.add_argument("--local", nargs="?", const="delf", default=None, metavar="CONFIG",
                   help="train the attention network of local features (DELF: attention-weighted pooling, "
                        "linear classifier, cross-entropy over instances; backbone frozen) instead of a head; "
                        + LOCAL_HELP)
    common(p, default=None, shown=f"{TRAIN_PRESET}; with --resume, the checkpoint's")
    p.set_defaults(func=cmd_train)

    def local_source(p):
        p.add_argument("--index", default=None, help="use the local features of this index (its configuration, "
                                                     "attention and PCA)")
        p.add_argument("--local", default="delf", metavar="CONFIG", help=LOCAL_HELP)
        p.add_argument("--attention", default=None, metavar="FILE", help=ATTENTION_HELP)
        p.add_argument("--device", type=_device, default=None, help="cpu, cuda, cuda:1 … (default: cuda when available)")

    p = sub.add_parser("show-matches", help="draw two photos side by side with their verified local matches")
    p.add_argument("query")
    p.add_argument("result")
    p.add_argument("--out", required=True, help="PNG file to write")
    p.add_argument("--model", choices=["affine", "homography"], default="affine", help="RANSAC model")
    p.add_argument("--bbox", type=_bbox, default=None, help="crop the query: x0,y0,x1,y1 in pixels")
    local_source(p)
    p.set_defaults(func=cmd_show_matches)

    p = sub.add_parser("match", help="match two photos' local features and print the inliers and the fitted transform")
    p.add_argument("first")
    p.add_argument("second")
    p.add_argument("--model", choices=["affine", "homography"], default="affine",
                   help="RANSAC model (the transform maps the first photo's pixels to the second's)")
    p.add_argument("--json", action="store_true", help="print JSON: inliers, tentative, transform (3×3), matches")
    local_source(p)
    p.set_defaults(func=cmd_match)

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
    p.add_argument("--allowed-hosts", nargs="+", default=None, metavar="HOST",
                   help="Host names the service answers to besides the loopback names and --host "
                        "(refusing others defeats DNS rebinding); '*' allows any")
    p.add_argument("--device", type=_device, default=None, help="cpu, cuda, cuda:1 … (default: cuda when available)")
    threads_option(p)
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("demo", help="index a small set of real photos and search it with altered copies")
    p.add_argument("--out", default="imret-demo", help="folder to write the demo photos and index to")
    common(p)
    p.set_defaults(func=cmd_demo)
    return ap


# The commands that write an index, and the argument naming it: each runs holding its lock.
_WRITERS = {"index": "out", "add": "index", "remove": "index"}


def _stdout_gone() -> bool:
    """Whether stdout is a pipe whose reader has closed it (poll reports an error on it)."""
    import select

    try:
        poller = select.poll()
        poller.register(sys.stdout.fileno(), select.POLLOUT)
        return any(ev & select.POLLERR for _, ev in poller.poll(0))
    except (AttributeError, OSError, ValueError):  # no poll (Windows), or no usable stdout
        return False


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if getattr(args, "threads", None) is not None:
            from .core.threads import apply_plan

            apply_plan(_thread_plan(args))
        if args.command in _WRITERS:  # one writer at a time per index (issue 16)
            from .index.lock import wait_from_env, writer_lock

            with writer_lock(getattr(args, _WRITERS[args.command]), wait_from_env()):
                rc = args.func(args)
        else:
            rc = args.func(args)
        sys.stdout.flush()  # here, not at exit: a reader that went away is then caught below
        return rc
    except BrokenPipeError as exc:
        if not _stdout_gone():  # another pipe (a worker's): an error like any other
            _eprint(f"imret: error: {exc.strerror or exc}")
            return 1
        # the reader of stdout left (`imret search … | head -3`): stop quietly, as Unix tools do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141  # 128 + SIGPIPE
    except ImretError as exc:
        _eprint(f"imret: error: {exc}")
        return 1
    except KeyError as exc:  # unknown registry names carry a full message
        _eprint(f"imret: error: {exc.args[0] if exc.args else exc}")
        return 1
    except (FileNotFoundError, NotADirectoryError, PermissionError) as exc:
        _eprint(f"imret: error: {exc}")
        return 1
    except OSError as exc:  # a full disk while journaling, logging …: the saved index is unchanged
        where = f"{exc.filename}: " if exc.filename else ""
        _eprint(f"imret: error: {where}{exc.strerror or exc}")
        return 1
    except KeyboardInterrupt:
        _eprint("imret: interrupted")
        return 130


if __name__ == "__main__":
    sys.exit(main())
