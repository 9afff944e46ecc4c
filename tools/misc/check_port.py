"""Exit 1 with the fix when the rendezvous port of a dist_*.sh run is taken.

    python tools/misc/check_port.py PORT SCRIPT [ARGS ...]

torch would otherwise stop with a bare EADDRINUSE traceback. The port is
bound as torch's store binds it (every interface, SO_REUSEADDR); an error
other than "in use" is left for torch to report.
"""
import errno
import os.path as osp
import socket
import sys


def in_use(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(('', port))
        except OSError as err:
            return err.errno == errno.EADDRINUSE
    return False


def free_port() -> int:
    with socket.socket() as s:
        s.bind(('', 0))
        return s.getsockname()[1]


def main(argv) -> int:
    port, script, args = int(argv[0]), argv[1], argv[2:]
    if not in_use(port):
        return 0
    print(f'{osp.basename(script)}: port {port} is in use (another training '
          f'job?): run with PORT={free_port()} {script} {" ".join(args)}',
          file=sys.stderr)
    return 1


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
