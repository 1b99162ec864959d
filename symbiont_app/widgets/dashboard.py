"""Feature dashboard: one SAE latent as a researcher reads it (what Neuronpedia shows, live and local).

Its label and where the label came from (an automatic one reads "tokens it fires on →
tokens it promotes"), the user's own label (editable, saved beside the SAE), whether it is
clamped or ablated now, its activation density over held-out text, its top activating
contexts with the token highlighted by its value, and the tokens its decoder direction
promotes and suppresses through the unembedding.
"""

from __future__ import annotations

import html

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QHBoxLayout, QLabel, QLineEdit, QPushButton, QSpinBox, QSplitter, QTextBrowser, QVBoxLayout, QWidget,
)

from ..session.dashboard import DashboardModel, describe_intervention
from .theme import series_colour

HIGHLIGHT = (255, 170, 40)
"""The highlight of a context's focus token (its opacity grows with the activation)."""


def contexts_html(record) -> str:
    """The record's top contexts, strongest first, the focus token shaded by value / the latent's max."""
    if record is None:
        return "<i>select a latent (meters, SAE panel, or the number above)</i>"
    if not record.has_record:
        return "<i>this SAE has no feature records, so no top contexts (build them with build_feature_records)</i>"
    if not record.contexts:
        return "<i>it never fired on the records' held-out text</i>"
    top = max(record.max_activation, max(c.value for c in record.contexts), 1e-9)
    rows = []
    for c in record.contexts:
        alpha = 0.25 + 0.75 * max(0.0, min(1.0, c.value / top))
        r, g, b = HIGHLIGHT
        # dark text on the highlight: the palette's text is light in Dark Mode
        focus = (f"<span style='background-color: rgba({r},{g},{b},{alpha:.2f}); color: black'>"
                 f"<b>{html.escape(c.focus)}</b></span>")
        rows.append(f"<tr><td align='right'><tt>{c.value:.2f}</tt>&nbsp;</td>"
                    f"<td>{html.escape(c.before[-70:])}{focus}{html.escape(c.after[:50])}</td></tr>")
    return ("<b>top activating contexts</b> (value of the highlighted token; the shade is value / max)"
            f"<table cellspacing='2'>{''.join(rows)}</table>")


class DashboardPanel(QWidget):
    def __init__(self, session, parent=None):
        super().__init__(parent)
        self.session = session
        self.model = DashboardModel.of(session)
        self.latent = QSpinBox()
        self.latent.setRange(0, 0)
        self.latent.setToolTip("Latent number")
        self.show_button = QPushButton("Show")
        self.show_button.setToolTip("Show this latent here (the meters and the SAE panel follow)")
        self.show_button.clicked.connect(lambda: self.model.show(self.latent.value()))
        self.title = QLabel("")
        self.title.setTextFormat(Qt.RichText)
        self.title.setWordWrap(True)
        self.source = QLabel("")
        self.source.setWordWrap(True)
        self.user_label = QLineEdit(placeholderText="your label for this latent")
        self.user_label.returnPressed.connect(self.save_label)
        self.save_button = QPushButton("Save label")
        self.save_button.setToolTip("Keep your label (labels.json beside the SAE; regenerating records keeps it)")
        self.save_button.clicked.connect(self.save_label)
        self.clear_button = QPushButton("Use automatic")
        self.clear_button.setToolTip("Remove your label: the automatic one shows again")
        self.clear_button.clicked.connect(self.clear_label)
        self.stats = QLabel("")
        self.stats.setWordWrap(True)
        self.explain_button = QPushButton("Explain (model-written)")
        self.explain_button.setToolTip("The loaded model describes the latent from its top contexts; the description is "
                                       "scored by whether the model can then tell held-out texts where it fires from "
                                       "texts where it does not (a small model writes and judges poorly)")
        self.explain_button.clicked.connect(self.explain)
        self.explanation = QLabel("")
        self.explanation.setWordWrap(True)
        self.explanation.setTextInteractionFlags(Qt.TextSelectableByMouse)

        self.density_plot = pg.PlotWidget(title="activation density")
        self.density_plot.setLabel("bottom", "activation value (where > 0)")
        self.density_plot.setLabel("left", "tokens")
        for axis in ("bottom", "left"):
            self.density_plot.getAxis(axis).enableAutoSIPrefix(False)
        self.density_bars = pg.BarGraphItem(x=np.zeros(0), height=np.zeros(0), width=1.0, brush=series_colour(0))
        self.density_plot.addItem(self.density_bars)
        self.density_note = QLabel("")
        self.density_note.setWordWrap(True)

        self.effects_plot = pg.PlotWidget(title="logit effect through the unembedding")
        self.effects_plot.setLabel("bottom", "logit per unit of the decoder direction")
        self.effects_plot.getAxis("bottom").enableAutoSIPrefix(False)
        self.effects_plot.invertY(True)
        self.effects_plot.addLegend(offset=(-5, -5))
        self.promoted_bars = pg.BarGraphItem(x0=np.zeros(0), y=np.zeros(0), width=np.zeros(0), height=0.7,
                                             brush=series_colour(2), name="promoted")
        self.suppressed_bars = pg.BarGraphItem(x0=np.zeros(0), y=np.zeros(0), width=np.zeros(0), height=0.7,
                                               brush=series_colour(1), name="suppressed")
        self.effects_plot.addItem(self.promoted_bars)
        self.effects_plot.addItem(self.suppressed_bars)
        self.contexts = QTextBrowser()

        pick = QHBoxLayout()
        for w in (QLabel("latent"), self.latent, self.show_button):
            pick.addWidget(w)
        pick.addWidget(self.title, 1)
        label_row = QHBoxLayout()
        label_row.addWidget(self.user_label, 1)
        label_row.addWidget(self.save_button)
        label_row.addWidget(self.clear_button)
        density = QWidget()
        density_layout = QVBoxLayout(density)
        density_layout.setContentsMargins(0, 0, 0, 0)
        density_layout.addWidget(self.density_plot, 1)
        density_layout.addWidget(self.density_note)
        plots = QSplitter(Qt.Horizontal)
        plots.addWidget(density)
        plots.addWidget(self.effects_plot)
        body = QSplitter(Qt.Vertical)
        body.addWidget(plots)
        body.addWidget(self.contexts)
        layout = QVBoxLayout(self)
        layout.addLayout(pick)
        layout.addWidget(self.source)
        layout.addLayout(label_row)
        layout.addWidget(self.stats)
        explain_row = QHBoxLayout()
        explain_row.addWidget(self.explain_button)
        explain_row.addWidget(self.explanation, 1)
        layout.addLayout(explain_row)
        layout.addWidget(body, 1)
        self._unsubscribe = [self.model.subscribe(self._on_model), self.model.sae.subscribe(self._on_sae)]
        self._unsubscribe.append(self.model.steering.subscribe(self._on_steering))
        self._on_sae("sae")

    # -- actions ----------------------------------------------------------------------------------------
    def save_label(self) -> None:
        if self.model.latent is None:
            self.session.error("select a latent first (meters, SAE panel, or its number here)")
            return
        self.model.set_label(self.user_label.text())

    def explain(self) -> None:
        if self.model.latent is None:
            self.session.error("select a latent first (meters, SAE panel, or its number here)")
            return
        self.model.explain()

    def clear_label(self) -> None:
        self.user_label.clear()
        self.save_label()  # an empty label removes the user's: the automatic one shows again

    # -- updates ----------------------------------------------------------------------------------------
    def _on_sae(self, what: str) -> None:
        if what == "sae":
            info = self.model.sae.info
            self.setEnabled(info is not None)
            self.latent.setRange(0, max(0, (info.d_sae if info else 1) - 1))
            self._redraw()
        elif what in ("record", "labels"):
            self._redraw()

    def _on_steering(self, what: str) -> None:
        if what == "items":
            self._redraw_title()

    def _on_model(self, what: str) -> None:
        if what == "latent":
            if self.model.latent is not None and self.model.density is None:
                self.model.request_density()
            self._redraw()
        elif what == "density":
            self._redraw_density()
        elif what == "label":
            self._redraw()
        elif what == "explanation":
            self._redraw_explanation()

    def _redraw(self) -> None:
        record = self.model.record
        if self.model.latent is not None:
            self.latent.setValue(self.model.latent)
        self._redraw_title()
        self.source.setText(self.model.label_source() if record is not None else "")
        if record is not None and self.user_label.text() != record.user_label and not self.user_label.hasFocus():
            self.user_label.setText(record.user_label)
        if record is not None and record.has_record:
            self.stats.setText(f"fires on {record.frequency:.3%} of the records' held-out tokens; max "
                               f"{record.max_activation:.2f}; mean when active {record.mean_activation:.2f}")
        else:
            self.stats.setText("")
        self.contexts.setHtml(contexts_html(record))
        self._redraw_effects(record)
        self._redraw_density()
        self._redraw_explanation()

    def _redraw_explanation(self) -> None:
        e = self.model.explanation
        self.explain_button.setEnabled(not self.model.explaining)
        if self.model.explaining:
            self.explanation.setText("the model is writing and judging an explanation…")
        elif e is None:
            self.explanation.setText("")
        else:
            n = len(e.scored)
            self.explanation.setText(
                f"“{e.explanation}” (by {e.model}) — detection accuracy {e.accuracy:.0%} on {n} held-out built-in "
                f"prompts ({n // 2} where it fires, {n - n // 2} where it stays under a tenth of its max; chance 50%), AUROC {e.auroc:.2f}")

    def _redraw_title(self) -> None:
        latent, info = self.model.latent, self.model.sae.info
        if info is None:
            self.title.setText("load an SAE (SAE panel) to see its latents")
            return
        if latent is None:
            self.title.setText(f"{html.escape(info.sae_id)}: pick a latent (click one in the meters or the SAE panel)")
            return
        label = self.model.record.label if self.model.record is not None else self.model.sae.label(latent)
        state = describe_intervention(self.model.intervention())
        marker = f" <span style='color:#d62728'>[{html.escape(state)}]</span>" if state else ""
        self.title.setText(f"<b>latent {latent}</b> of {html.escape(info.sae_id)} at {html.escape(info.hook_point)}: "
                           f"<b>{html.escape(label or '(no label)')}</b>{marker}")

    def _redraw_effects(self, record) -> None:
        promoted = list(record.promoted) if record is not None else []
        suppressed = list(record.suppressed) if record is not None else []
        n_up = len(promoted)
        self.promoted_bars.setOpts(x0=np.zeros(n_up), y=np.arange(n_up, dtype=np.float64),
                                   width=np.array([v for _, v in promoted], dtype=np.float64), height=0.7)
        ys = n_up + 0.5 + np.arange(len(suppressed), dtype=np.float64)
        values = np.array([v for _, v in suppressed], dtype=np.float64)
        # a bar of negative width draws leftwards from x0 = 0
        self.suppressed_bars.setOpts(x0=np.zeros(len(suppressed)), y=ys, width=values, height=0.7)
        ticks = [(float(i), _token(t)) for i, (t, _) in enumerate(promoted)]
        ticks += [(float(y), _token(t)) for y, (t, _) in zip(ys, suppressed)]
        self.effects_plot.getAxis("left").setTicks([ticks])
        if ticks:
            self.effects_plot.setYRange(-0.6, ticks[-1][0] + 0.6, padding=0)
            span = max([abs(v) for _, v in promoted + suppressed] + [1e-6])
            self.effects_plot.setXRange(-span * 1.05, span * 1.05, padding=0)

    def _redraw_density(self) -> None:
        density = self.model.density
        if density is None or density.latent != self.model.latent:
            self.density_bars.setOpts(x=np.zeros(0), height=np.zeros(0))
            busy = self.model.density_request is not None and self.session.is_active(self.model.density_request)
            self.density_note.setText("reading the built-in prompts through the SAE…" if busy else "")
            return
        centres = (density.edges[:-1] + density.edges[1:]) / 2  # [bins]
        width = float(density.edges[1] - density.edges[0]) if len(density.edges) > 1 else 1.0
        self.density_bars.setOpts(x=centres, height=density.counts.astype(np.float64), width=width * 0.9)
        # the bars' extent, set explicitly: the view does not re-fit itself when a bar item changes
        self.density_plot.setXRange(0.0, float(density.edges[-1]), padding=0.02)
        self.density_plot.setYRange(0.0, max(1.0, float(density.counts.max(initial=0))) * 1.05, padding=0)
        self.density_plot.setTitle(f"activation density: {density.frequency:.2%} of {density.n_tokens:,} tokens")
        self.density_note.setText(f"{density.n_active:,} of {density.n_tokens:,} tokens of {density.corpus} "
                                  "have a value > 0; the histogram counts those (the model without steering or clamps)")


def _token(text: str) -> str:
    shown = repr(text)[1:-1].replace(" ", "·")  # spaces visible: ' the' and 'the' are different tokens
    return shown if len(shown) <= 14 else shown[:13] + "…"
