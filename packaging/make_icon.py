"""Draw Symbiont's icon at build time (no binary icon files in git).

    python packaging/make_icon.py OUT_DIR

writes ``OUT_DIR/symbiont.png`` (1024 px, shipped in the bundle for the window icon) and
``OUT_DIR/Symbiont.iconset/`` (the ten sizes ``iconutil -c icns`` needs on macOS). The
motif: two overlapping rings (a model and the instrument living inside it) on a dark
rounded square, with a trace running through them.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

ICONSET_SIZES = [(16, 1), (16, 2), (32, 1), (32, 2), (128, 1), (128, 2), (256, 1), (256, 2), (512, 1), (512, 2)]


def draw(size: int):
    from PySide6.QtCore import QPointF, QRectF, Qt
    from PySide6.QtGui import QColor, QImage, QLinearGradient, QPainter, QPainterPath, QPen

    image = QImage(size, size, QImage.Format_ARGB32_Premultiplied)
    image.fill(Qt.transparent)
    s = size / 1024.0
    p = QPainter(image)
    p.setRenderHint(QPainter.Antialiasing)
    # macOS icon grid: an 824 px rounded square centred in 1024.
    tile = QRectF(100 * s, 100 * s, 824 * s, 824 * s)
    gradient = QLinearGradient(tile.topLeft(), tile.bottomRight())
    gradient.setColorAt(0.0, QColor("#1d2b4f"))
    gradient.setColorAt(1.0, QColor("#0b1224"))
    p.setPen(Qt.NoPen)
    p.setBrush(gradient)
    p.drawRoundedRect(tile, 185 * s, 185 * s)
    for cx, color in ((420, "#3ddc97"), (604, "#ffb347")):
        pen = QPen(QColor(color), 56 * s)
        p.setPen(pen)
        p.setBrush(Qt.NoBrush)
        p.drawEllipse(QPointF(cx * s, 512 * s), 210 * s, 210 * s)
    trace = QPainterPath(QPointF(190 * s, 640 * s))
    points = [(300, 640), (360, 420), (450, 700), (540, 330), (620, 600), (700, 480), (834, 480)]
    for x, y in points:
        trace.lineTo(QPointF(x * s, y * s))
    pen = QPen(QColor("#f4f6fb"), 30 * s, Qt.SolidLine, Qt.RoundCap, Qt.RoundJoin)
    p.setPen(pen)
    p.drawPath(trace)
    p.end()
    return image


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python packaging/make_icon.py OUT_DIR", file=sys.stderr)
        return 2
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from PySide6.QtGui import QGuiApplication

    app = QGuiApplication.instance() or QGuiApplication([sys.argv[0]])  # noqa: F841 - Qt wants one for painting
    out = Path(argv[0])
    iconset = out / "Symbiont.iconset"
    iconset.mkdir(parents=True, exist_ok=True)
    big = draw(1024)
    if not big.save(str(out / "symbiont.png")):
        print(f"make_icon: could not write {out / 'symbiont.png'}", file=sys.stderr)
        return 1
    for points, scale in ICONSET_SIZES:
        name = f"icon_{points}x{points}{'@2x' if scale == 2 else ''}.png"
        pixels = points * scale
        image = big if pixels == 1024 else draw(pixels)
        if not image.save(str(iconset / name)):
            print(f"make_icon: could not write {iconset / name}", file=sys.stderr)
            return 1
    print(out / "symbiont.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
