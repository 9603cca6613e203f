"""Install pure-python wheels without pip: a wheel is a zip of the files that go into
site-packages (PEP 427), so unpacking it there is what pip does for a pure wheel.

Usage: python3 install_wheels.py DIR   (every *.whl in DIR)
"""

import glob
import os
import sys
import sysconfig
import zipfile


def main() -> int:
    src = sys.argv[1]
    # purelib is on sys.path for this interpreter: /usr/local/lib/python3.X/dist-packages
    # on Debian's python3, .../site-packages on python:3.X images.
    dest = sysconfig.get_paths()["purelib"]
    os.makedirs(dest, exist_ok=True)
    wheels = sorted(glob.glob(os.path.join(src, "*.whl")))
    if not wheels:
        print(f"install_wheels: no wheels in {src}", file=sys.stderr)
        return 1
    for w in wheels:
        if not w.endswith("-none-any.whl"):
            print(f"install_wheels: {w} is not a pure-python wheel", file=sys.stderr)
            return 1
        with zipfile.ZipFile(w) as z:
            z.extractall(dest)
            dist_info = next(n.split("/")[0] for n in z.namelist() if ".dist-info/" in n)
        with open(os.path.join(dest, dist_info, "INSTALLER"), "w") as f:
            f.write("harness-install-wheels\n")
        print(f"install_wheels: {os.path.basename(w)} -> {dest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
