#!/usr/bin/env python3
"""Line charts as PNG files with the Python standard library only (the soak's
plot; bench/soak.py). A PNG is an 8-bit RGB image: the signature, IHDR,
one IDAT (the rows, each with filter byte 0, deflated with zlib) and IEND,
each chunk with its CRC-32 (RFC 2083). Text is drawn with a 5x7 bitmap font
of capitals, digits and a little punctuation, scaled 2x; lower case is
drawn as capitals.

    write_chart(path, title, xlabel, panels)
        panels: [(panel title, [(series name, (r, g, b), [(x, y), ...]), ...]), ...]
    read_png(path) -> (width, height, rows): decodes what write_png wrote, checking
        the signature, every CRC and IHDR (the unit check uses it)

    write_chart(..., mark=(60, "WARM-UP")) adds a dashed vertical line
    python3 bench/plot_png.py --self-test    the unit check, TAP (make check runs it
                                             as bench/test_plot_png.py)
"""

import math
import struct
import sys
import zlib

SIGNATURE = b"\x89PNG\r\n\x1a\n"

# 5x7 glyphs, one string of 5 columns per row, "#" set.
FONT = {
    "A": (" ### ", "#   #", "#   #", "#####", "#   #", "#   #", "#   #"),
    "B": ("#### ", "#   #", "#   #", "#### ", "#   #", "#   #", "#### "),
    "C": (" ### ", "#   #", "#    ", "#    ", "#    ", "#   #", " ### "),
    "D": ("#### ", "#   #", "#   #", "#   #", "#   #", "#   #", "#### "),
    "E": ("#####", "#    ", "#    ", "#### ", "#    ", "#    ", "#####"),
    "F": ("#####", "#    ", "#    ", "#### ", "#    ", "#    ", "#    "),
    "G": (" ### ", "#   #", "#    ", "# ###", "#   #", "#   #", " ####"),
    "H": ("#   #", "#   #", "#   #", "#####", "#   #", "#   #", "#   #"),
    "I": (" ### ", "  #  ", "  #  ", "  #  ", "  #  ", "  #  ", " ### "),
    "J": ("  ###", "   # ", "   # ", "   # ", "   # ", "#  # ", " ##  "),
    "K": ("#   #", "#  # ", "# #  ", "##   ", "# #  ", "#  # ", "#   #"),
    "L": ("#    ", "#    ", "#    ", "#    ", "#    ", "#    ", "#####"),
    "M": ("#   #", "## ##", "# # #", "# # #", "#   #", "#   #", "#   #"),
    "N": ("#   #", "#   #", "##  #", "# # #", "#  ##", "#   #", "#   #"),
    "O": (" ### ", "#   #", "#   #", "#   #", "#   #", "#   #", " ### "),
    "P": ("#### ", "#   #", "#   #", "#### ", "#    ", "#    ", "#    "),
    "Q": (" ### ", "#   #", "#   #", "#   #", "# # #", "#  # ", " ## #"),
    "R": ("#### ", "#   #", "#   #", "#### ", "# #  ", "#  # ", "#   #"),
    "S": (" ####", "#    ", "#    ", " ### ", "    #", "    #", "#### "),
    "T": ("#####", "  #  ", "  #  ", "  #  ", "  #  ", "  #  ", "  #  "),
    "U": ("#   #", "#   #", "#   #", "#   #", "#   #", "#   #", " ### "),
    "V": ("#   #", "#   #", "#   #", "#   #", "#   #", " # # ", "  #  "),
    "W": ("#   #", "#   #", "#   #", "# # #", "# # #", "# # #", " # # "),
    "X": ("#   #", "#   #", " # # ", "  #  ", " # # ", "#   #", "#   #"),
    "Y": ("#   #", "#   #", " # # ", "  #  ", "  #  ", "  #  ", "  #  "),
    "Z": ("#####", "    #", "   # ", "  #  ", " #   ", "#    ", "#####"),
    "0": (" ### ", "#   #", "#  ##", "# # #", "##  #", "#   #", " ### "),
    "1": ("  #  ", " ##  ", "  #  ", "  #  ", "  #  ", "  #  ", " ### "),
    "2": (" ### ", "#   #", "    #", "   # ", "  #  ", " #   ", "#####"),
    "3": ("#####", "   # ", "  #  ", "   # ", "    #", "#   #", " ### "),
    "4": ("   # ", "  ## ", " # # ", "#  # ", "#####", "   # ", "   # "),
    "5": ("#####", "#    ", "#### ", "    #", "    #", "#   #", " ### "),
    "6": ("  ## ", " #   ", "#    ", "#### ", "#   #", "#   #", " ### "),
    "7": ("#####", "    #", "   # ", "  #  ", " #   ", " #   ", " #   "),
    "8": (" ### ", "#   #", "#   #", " ### ", "#   #", "#   #", " ### "),
    "9": (" ### ", "#   #", "#   #", " ####", "    #", "   # ", " ##  "),
    " ": ("     ",) * 7,
    "-": ("     ", "     ", "     ", "#####", "     ", "     ", "     "),
    "+": ("     ", "  #  ", "  #  ", "#####", "  #  ", "  #  ", "     "),
    ".": ("     ", "     ", "     ", "     ", "     ", " ##  ", " ##  "),
    ",": ("     ", "     ", "     ", "     ", " ##  ", "  #  ", " #   "),
    ":": ("     ", " ##  ", " ##  ", "     ", " ##  ", " ##  ", "     "),
    "/": ("    #", "    #", "   # ", "  #  ", " #   ", "#    ", "#    "),
    "(": ("   # ", "  #  ", " #   ", " #   ", " #   ", "  #  ", "   # "),
    ")": (" #   ", "  #  ", "   # ", "   # ", "   # ", "  #  ", " #   "),
    "%": ("##   ", "##  #", "   # ", "  #  ", " #   ", "#  ##", "   ##"),
    "_": ("     ", "     ", "     ", "     ", "     ", "     ", "#####"),
    "=": ("     ", "     ", "#####", "     ", "#####", "     ", "     "),
}
SCALE = 2
CHAR_W, CHAR_H = 6 * SCALE, 8 * SCALE  # a glyph and its spacing


class Image:
    def __init__(self, width, height, bg=(255, 255, 255)):
        self.w, self.h = width, height
        self.px = [bytearray(bytes(bg) * width) for _ in range(height)]

    def set(self, x, y, c):
        if 0 <= x < self.w and 0 <= y < self.h:
            self.px[y][3 * x:3 * x + 3] = bytes(c)

    def rect(self, x0, y0, x1, y1, c):
        for y in range(max(0, y0), min(self.h, y1 + 1)):
            for x in range(max(0, x0), min(self.w, x1 + 1)):
                self.px[y][3 * x:3 * x + 3] = bytes(c)

    def line(self, x0, y0, x1, y1, c, width=1):
        """Bresenham; width 2 draws the pixel below and right too."""
        dx, dy = abs(x1 - x0), -abs(y1 - y0)
        sx, sy = (1 if x0 < x1 else -1), (1 if y0 < y1 else -1)
        err = dx + dy
        while True:
            for ox in range(width):
                for oy in range(width):
                    self.set(x0 + ox, y0 + oy, c)
            if x0 == x1 and y0 == y1:
                return
            e2 = 2 * err
            if e2 >= dy:
                err += dy
                x0 += sx
            if e2 <= dx:
                err += dx
                y0 += sy

    def text(self, x, y, s, c=(0, 0, 0)):
        for ch in s.upper():
            glyph = FONT.get(ch, FONT[" "])
            for gy, row in enumerate(glyph):
                for gx, bit in enumerate(row):
                    if bit == "#":
                        self.rect(x + gx * SCALE, y + gy * SCALE,
                                  x + gx * SCALE + SCALE - 1, y + gy * SCALE + SCALE - 1, c)
            x += CHAR_W

    def png(self):
        raw = b"".join(b"\x00" + bytes(row) for row in self.px)
        return (SIGNATURE + chunk(b"IHDR", struct.pack(">IIBBBBB", self.w, self.h, 8, 2, 0, 0, 0))
                + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b""))


def chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def read_png(path):
    """(width, height, rows of RGB bytes) of an 8-bit RGB PNG with filter 0,
    raising ValueError on a bad signature, CRC, IHDR or data length."""
    data = open(path, "rb").read()
    if data[:8] != SIGNATURE:
        raise ValueError("not a PNG signature")
    pos, chunks = 8, []
    while pos < len(data):
        (n,) = struct.unpack(">I", data[pos:pos + 4])
        kind, body = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + n]
        (crc,) = struct.unpack(">I", data[pos + 8 + n:pos + 12 + n])
        if zlib.crc32(kind + body) != crc:
            raise ValueError("bad CRC in chunk %r" % kind)
        chunks.append((kind, body))
        pos += 12 + n
    if not chunks or chunks[0][0] != b"IHDR" or chunks[-1][0] != b"IEND":
        raise ValueError("IHDR must come first and IEND last")
    w, h, depth, ctype, comp, filt, interlace = struct.unpack(">IIBBBBB", chunks[0][1])
    if (depth, ctype, comp, filt, interlace) != (8, 2, 0, 0, 0):
        raise ValueError("not 8-bit RGB, non-interlaced")
    raw = zlib.decompress(b"".join(b for k, b in chunks if k == b"IDAT"))
    stride = 1 + 3 * w
    if len(raw) != h * stride:
        raise ValueError("%d bytes of image data for %dx%d" % (len(raw), w, h))
    rows = [raw[y * stride + 1:(y + 1) * stride] for y in range(h)]
    if any(raw[y * stride] != 0 for y in range(h)):
        raise ValueError("a filter other than 0")
    return w, h, rows


def nice_step(span, most=6):
    """A tick step of 1, 2 or 5 times a power of ten giving at most `most` steps."""
    if span <= 0:
        return 1.0
    base = 10 ** math.floor(math.log10(span / most))
    for m in (1, 2, 5, 10):
        if span / (m * base) <= most:
            return m * base
    return 10 * base


def label(v):
    return ("%d" % v) if abs(v - round(v)) < 1e-9 else ("%g" % round(v, 6))


GRID, AXIS = (225, 225, 225), (90, 90, 90)


def write_chart(path, title, xlabel, panels, width=1500, panel_h=280, mark=None):
    """mark: (x, text), a dashed vertical line across every panel (the end of
    the soak's warm-up)."""
    left, right, top, gap, bottom = 100, 400, 50, 60, 60
    height = top + len(panels) * (panel_h + gap) - gap + bottom
    img = Image(width, height)
    img.text(left, 14, title)
    xs = [x for _, series in panels for _, _, pts in series for x, _ in pts]
    xmax = max(xs) if xs else 1
    xstep = nice_step(xmax, 10)
    xmax = math.ceil(xmax / xstep) * xstep or 1
    pw = width - left - right
    for i, (ptitle, series) in enumerate(panels):
        y0 = top + i * (panel_h + gap) + 20
        ph = panel_h - 20
        img.text(left, y0 - 20, ptitle)
        ys = [y for _, _, pts in series for _, y in pts]
        ymax = max(ys) if ys else 1
        ystep = nice_step(ymax * 1.05 or 1, 6)
        ymax = math.ceil(ymax * 1.05 / ystep) * ystep or ystep

        def px(x):
            return left + round(x / xmax * pw)

        def py(y):
            return y0 + ph - round(y / ymax * ph)

        v = 0.0
        while v <= ymax + 1e-9:
            img.line(left, py(v), left + pw, py(v), GRID)
            s = label(v)
            img.text(left - 8 - len(s) * CHAR_W, py(v) - CHAR_H // 2 + 1, s, AXIS)
            v += ystep
        v = 0.0
        while v <= xmax + 1e-9:
            img.line(px(v), y0, px(v), y0 + ph, GRID)
            s = label(v)
            img.text(px(v) - len(s) * CHAR_W // 2, y0 + ph + 6, s, AXIS)
            v += xstep
        if mark is not None:
            for yy in range(y0, y0 + ph, 8):
                img.line(px(mark[0]), yy, px(mark[0]), min(yy + 3, y0 + ph), AXIS)
            img.text(px(mark[0]) + 6, y0 + 4, mark[1], AXIS)
        img.line(left, y0, left, y0 + ph, AXIS)
        img.line(left, y0 + ph, left + pw, y0 + ph, AXIS)
        for j, (name, colour, pts) in enumerate(series):
            for (xa, ya), (xb, yb) in zip(pts, pts[1:]):
                img.line(px(xa), py(ya), px(xb), py(yb), colour, 2)
            if len(pts) == 1:
                img.rect(px(pts[0][0]) - 1, py(pts[0][1]) - 1, px(pts[0][0]) + 1, py(pts[0][1]) + 1, colour)
            ly = y0 + j * (CHAR_H + 4)
            img.rect(left + pw + 16, ly + 5, left + pw + 40, ly + 8, colour)
            img.text(left + pw + 48, ly, name, colour)
    img.text(left + pw // 2 - len(xlabel) * CHAR_W // 2, height - 26, xlabel, AXIS)
    with open(path, "wb") as f:
        f.write(img.png())


def self_test():
    """The unit check: a chart decodes (signature, CRCs, IHDR, length), has
    the size asked for, and has the pixels drawn where they were drawn."""
    import os
    import tempfile
    failures = checks = 0

    def check(ok, what):
        nonlocal failures, checks
        checks += 1
        print(("ok - " if ok else "not ok - ") + what)
        failures += not ok

    d = tempfile.mkdtemp()
    try:
        p = os.path.join(d, "t.png")
        img = Image(7, 3)
        img.set(2, 1, (10, 20, 30))
        with open(p, "wb") as f:
            f.write(img.png())
        w, h, rows = read_png(p)
        check((w, h) == (7, 3), "a 7x3 image decodes as 7x3")
        check(rows[1][6:9] == b"\x0a\x14\x1e" and rows[0] == b"\xff" * 21, "its one dark pixel is where it was set")
        data = bytearray(open(p, "rb").read())
        data[-20] ^= 1  # inside IDAT
        open(p, "wb").write(bytes(data))
        try:
            read_png(p)
            check(False, "a flipped bit is caught by the CRC check")
        except (ValueError, zlib.error):
            check(True, "a flipped bit is caught by the CRC check")
        c = os.path.join(d, "c.png")
        write_chart(c, "TEST 0123456789", "TIME S",
                    [("RSS MIB", [("gateway", (255, 0, 0), [(0, 1), (10, 2), (20, 1.5)])]),
                     ("P99 MS", [("p99", (0, 0, 255), [(0, 5), (20, 7)])])],
                    width=600, panel_h=200)
        w, h, rows = read_png(c)
        check((w, h) == (600, 50 + 2 * 260 - 60 + 60), "a two-panel chart decodes at 600x%d" % h)
        red = sum(r[i:i + 3] == b"\xff\x00\x00" for r in rows for i in range(0, len(r), 3))
        blue = sum(r[i:i + 3] == b"\x00\x00\xff" for r in rows for i in range(0, len(r), 3))
        check(red > 200 and blue > 200, "both series are drawn (%d red, %d blue pixels)" % (red, blue))
        check(set(FONT) >= set("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 -.:/()%"), "the font has every capital and digit")
        check(all(len(g) == 7 and all(len(r) == 5 for r in g) for g in FONT.values()), "every glyph is 5x7")
    finally:
        for f in os.listdir(d):
            os.unlink(os.path.join(d, f))
        os.rmdir(d)
    print("1..%d" % checks)  # TAP: the plan may come last
    return 1 if failures else 0


if __name__ == "__main__":
    if sys.argv[1:] == ["--self-test"]:
        sys.exit(self_test())
    print(__doc__)
    sys.exit(2)
