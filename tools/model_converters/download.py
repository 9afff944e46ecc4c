"""Fetch the authors' published SparX checkpoints and convert them.

    python tools/model_converters/download.py sparx_mamba_tiny_in1k.pth
    python tools/model_converters/download.py upernet_sparx_mamba_tiny.pth
    python tools/model_converters/download.py --all
    python tools/model_converters/download.py --list

A file is named by its release name, its config's model name or its
converted name. Each is downloaded once into the cache ($MMSPARX_CACHE,
else torch.hub's checkpoints folder), converted with a strict load of the
model read off its shapes, and written to OUT_DIR (default checkpoints/)
under the name the metafile gives it: the ImageNet files become the
checkpoints/sparx_mamba_{t,s,b}_in1k.pth the dense configs start from.
The list of files is configs/sparx/metafile.yml (Weights:, Converted
Weights:). --url-base (or $MMSPARX_WEIGHTS_URL_BASE) fetches the same file
names from a mirror. A failed download or a wrong file is reported in one
paragraph, exit status 2.
"""
import argparse
import os.path as osp
import sys
from typing import List, Optional

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
sys.path.insert(0, ROOT)

from mmsparx.apis.conversion import model_label  # noqa: E402
from mmsparx.converters.loading import CLI_ERRORS  # noqa: E402
from mmsparx.model_zoo.weights import (OUT_DIR, URL_BASE_ENV,  # noqa: E402
                                       PublishedFile, fetch_and_convert,
                                       find_published, published_files,
                                       update_weights_tables)


def parse_args(argv: Optional[List[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument('names', nargs='*', metavar='NAME',
                        help='release file, model or converted file name')
    parser.add_argument('--all', action='store_true',
                        help='every published file')
    parser.add_argument('--list', action='store_true',
                        help='list the published files and exit')
    parser.add_argument('--out-dir', default=OUT_DIR,
                        help=f'where the converted files go (default '
                        f'{OUT_DIR}/, created if missing)')
    parser.add_argument('--out', metavar='FILE',
                        help='the converted file (one NAME only)')
    parser.add_argument('--url-base', metavar='URL',
                        help=f'fetch the same file names from here '
                        f'(default: ${URL_BASE_ENV}, else the release)')
    parser.add_argument('--force', action='store_true',
                        help='convert again over an existing output')
    parser.add_argument('--update-readme', action='store_true',
                        help="regenerate the READMEs' weights tables from "
                        'the metafiles and exit')
    args = parser.parse_args(argv)
    if not (args.names or args.all or args.list or args.update_readme):
        parser.error('give a NAME, --all or --list')
    if args.all and args.names:
        parser.error('give NAMEs or --all, not both')
    if args.out and len(args.names) != 1:
        parser.error('--out takes exactly one NAME (--out-dir for several)')
    try:
        args.items = published_files(ROOT) if args.all else \
            [find_published(ROOT, name) for name in args.names]
    except KeyError as err:
        parser.error(err.args[0])
    args.prog = parser.prog
    return args


def list_files() -> None:
    for item in published_files(ROOT):
        print(f'{item.file:<42} {item.model:<48} -> {OUT_DIR}/'
              f'{item.converted}\n{"":<42} {item.url}')


def fetch_one(item: PublishedFile, dst: str, args) -> None:
    if osp.exists(dst) and not args.force:
        print(f'{item.file} -> {dst} (already there; --force converts it '
              f'again)')
        return
    summary = fetch_and_convert(item, dst, args.url_base)
    print(f'{item.file} -> {dst} ({model_label(summary["arch"])}, '
          f'{summary["keys"]} keys, strict load passed; downloaded copy: '
          f'{summary["cached"]})', flush=True)


def main(argv: Optional[List[str]] = None) -> None:
    args = parse_args(argv)
    if args.list:
        list_files()
        return
    if args.update_readme:
        for readme in update_weights_tables(ROOT):
            print(f'updated {readme}')
        return
    for item in args.items:
        dst = args.out or osp.join(args.out_dir, item.converted)
        try:
            fetch_one(item, dst, args)
        except CLI_ERRORS as err:
            print(f'{args.prog}: error: {err}', file=sys.stderr)
            sys.exit(2)


if __name__ == '__main__':
    main()
