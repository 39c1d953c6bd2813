"""`scratchgpt data list|download|path`: the registry of bundled and downloadable data files."""

from __future__ import annotations

import argparse

from scratchgpt.cli.args import positive_float


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `data` command and its subcommands."""
    p = subparsers.add_parser(
        "data",
        help="list, locate or download the known data files (The Verdict, SMS spam, ...)",
        description=(
            "The data files scratchgpt knows: each is bundled with the package and can be "
            "downloaded fresh from its canonical URL (sha256 checked) into the cache "
            "($SCRATCHGPT_CACHE/data, default ~/.cache/scratchgpt/data)."
        ),
    )
    sub = p.add_subparsers(dest="data_command", metavar="SUBCOMMAND", required=True)
    ls = sub.add_parser("list", help="names, bundled paths, URLs and licenses")
    ls.set_defaults(func=run)
    path = sub.add_parser("path", help="print the path of a file (bundled copy, else the cache)")
    path.add_argument("name", metavar="NAME")
    path.add_argument("--cache-dir", metavar="DIR", help="cache folder to look in")
    path.set_defaults(func=run)
    dl = sub.add_parser("download", help="download a fresh copy into the cache (needs a network)")
    dl.add_argument("name", metavar="NAME")
    dl.add_argument("--cache-dir", metavar="DIR", help="download into this folder instead")
    dl.add_argument("--force", action="store_true", help="download again even if cached")
    dl.add_argument("--url", help="download from this URL (a mirror) instead; sha256 still checked")
    dl.add_argument(
        "--timeout", type=positive_float, default=60.0, help="seconds (default: %(default)s)"
    )
    dl.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run one `data` subcommand."""
    from scratchgpt.data import sources

    if args.data_command == "list":
        for s in sources.list_sources():
            bundled = s.bundled_path
            print(f"{s.name}")
            print(f"  {s.description}")
            print(f"  bundled: {bundled if bundled is not None else '(not bundled)'}")
            print(
                f"  url:     {s.url}" + (f" (file {s.archive_member})" if s.archive_member else "")
            )
            print(f"  license: {s.license}")
            print(f"  sha256:  {s.sha256}")
        print(f"cache: {sources.data_cache_dir()}")
        return 0
    if args.data_command == "path":
        print(sources.get_path(args.name, cache_dir=args.cache_dir))
        return 0
    path = sources.download(
        args.name, args.cache_dir, force=args.force, timeout=args.timeout, url=args.url
    )
    print(path)
    return 0
