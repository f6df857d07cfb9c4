"""The web app (`changeagent serve`): Gradio Blocks over the service's functions.

Layout: two inputs (an upload, or a file under a --root: how GeoTIFF scenes are opened), the head, and
one button; then the caption, the class-coloured overlay with an opacity slider, a before/after
slider (`gr.ImageSlider`: date A against date B with the overlay), the per-class table of changed
area and object counts, and downloads (mask PNG/GeoTIFF, the JSON record, scenes' GeoJSON). A search
tab appears when indexes are given. Uploads are `gr.File`, not `gr.Image`: the file reaches the model
byte for byte (no re-encoding) and GeoTIFFs are accepted. The model is loaded once (the service);
requests go through Gradio's queue (`concurrency` at a time, `queue` waiting, REST routes closed so
nothing skips it) and then the service's own gate and time limit. A request's error is shown as a
message in the page, never a traceback.
"""

from __future__ import annotations

import hmac
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from changeagent.app.service import ChangeService, Upload
from changeagent.errors import ChangeAgentError

log = logging.getLogger("changeagent.app")
SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff", ".jp2", ".img", ".vrt")
TABLE_HEADERS = ["class", "changed area (%)", "pixels", "objects"]
SEARCH_HEADERS = ["rank", "score", "name", "caption", "changed (%)", "footprint"]


def _source(upload: str | None, chosen: str | None, what: str) -> Any:
    """The upload (a server-side temp path from Gradio) if given, else the path chosen under a root."""
    if upload:
        return Upload(Path(upload))
    if chosen:
        return chosen
    raise ChangeAgentError(f"give image {what}: upload a file or choose one under --root")


def _table(res: Any) -> list[list[Any]]:
    return [[c.name, round(100 * c.changed_fraction, 3), c.pixels, c.objects] for c in res.classes]


def _summary(res: Any) -> str:
    extra = "; per-window captions with footprints in the GeoJSON download" if res.geojson_path else ""
    return (f"**{res.mode}** {res.width}x{res.height} px, head `{res.head}`: changed "
            f"{100 * res.changed_fraction:.2f} % of {res.valid_pixels} valid pixels (binary change head "
            f"{100 * res.change_fraction:.2f} %); objects of at least {res.min_area} px{extra}")


def build_app(svc: ChangeService) -> Any:
    """The Gradio Blocks of the app (not launched)."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    import gradio as gr

    from changeagent.app import preview
    from changeagent.app.thumbnails import load_rgb
    from changeagent.inference import postprocess as post

    choices = svc.roots.list_files(SUFFIXES) if svc.roots else []

    def guard(fn: Any) -> Any:
        """Service errors become a message in the page; anything else is logged and reported briefly."""
        def wrapped(*args: Any, **kwargs: Any) -> Any:
            try:
                return fn(*args, **kwargs)
            except ChangeAgentError as e:
                raise gr.Error(str(e), print_exception=False) from None
            except gr.Error:
                raise
            except Exception:
                log.exception("request failed")
                raise gr.Error("internal error (details are in the server log)", print_exception=False) from None
        wrapped.__name__ = fn.__name__
        return wrapped

    def palette(head: str) -> list[tuple[int, int, int]]:
        spec = svc.predictor(head).spec
        return post.palettes(spec)[post.map_key(spec)]

    @guard
    def detect(up_a: str | None, up_b: str | None, ch_a: str | None, ch_b: str | None, head: str,
               opacity: float, progress: Any = gr.Progress(track_tqdm=True)) -> tuple[Any, ...]:
        progress(0, desc="reading and running the model")
        res = svc.detect_changes(_source(up_a, ch_a, "A"), _source(up_b, ch_b, "B"), head or None)
        folder = Path(res.overlay_path).parent
        over = _overlay(folder, head, opacity)
        files = [p for p in (res.mask_path, res.record_path, res.geojson_path, *res.extra_masks.values()) if p]
        state = {"folder": str(folder), "head": res.head}
        return (res.caption, over, (str(folder / "a.png"), over), _table(res), _summary(res), files, state)

    def _overlay(folder: Path, head: str, opacity: float) -> np.ndarray:
        b = load_rgb(folder / "b.png")
        from PIL import Image

        with Image.open(folder / "classes.png") as im:
            classes = np.asarray(im)
        return preview.blend(b, classes, palette(head), opacity)

    @guard
    def restyle(opacity: float, state: dict[str, Any] | None) -> tuple[Any, Any]:
        if not state:
            return gr.skip(), gr.skip()
        folder = Path(state["folder"])
        if not svc.out.contains(folder) or not folder.is_dir():
            raise ChangeAgentError("this result is no longer on the server; run it again")
        over = _overlay(folder, state["head"], opacity)
        return over, (str(folder / "a.png"), over)

    with gr.Blocks(title="changeagent", analytics_enabled=False, delete_cache=(600, 3600)) as demo:
        gr.Markdown(f"## changeagent: what changed between two images?\nModel `{svc.source}`; heads "
                    f"{', '.join(svc.heads)}; tools {', '.join(svc.tools())}. Limits: uploads "
                    f"{svc.limits.max_upload_mb:g} MiB, {svc.limits.max_megapixels:g} megapixels per image, "
                    f"{svc.limits.timeout_s:g} s per request.")
        with gr.Tab("Changes"):
            with gr.Row():
                with gr.Column():
                    up_a = gr.File(label="Date A (before): upload", file_types=list(SUFFIXES), type="filepath",
                                   elem_id="upload_a")
                    ch_a = gr.Dropdown(choices=choices, value=None, label="or a file under --root",
                                       allow_custom_value=True, visible=bool(svc.roots), elem_id="root_a")
                with gr.Column():
                    up_b = gr.File(label="Date B (after): upload", file_types=list(SUFFIXES), type="filepath",
                                   elem_id="upload_b")
                    ch_b = gr.Dropdown(choices=choices, value=None, label="or a file under --root",
                                       allow_custom_value=True, visible=bool(svc.roots), elem_id="root_b")
            with gr.Row():
                head = gr.Dropdown(choices=svc.heads, value=svc.default.head, label="head (which mask)",
                                   elem_id="head")
                opacity = gr.Slider(0.0, 1.0, value=0.55, step=0.05, label="overlay opacity", elem_id="opacity")
                run = gr.Button("Detect changes", variant="primary", elem_id="run")
            caption = gr.Textbox(label="Caption", interactive=False, elem_id="caption")
            summary = gr.Markdown(elem_id="summary")
            with gr.Row():
                overlay = gr.Image(label="Change overlay (date B)", type="numpy", format="png", interactive=False,
                                   height=420, elem_id="overlay")
                compare = gr.ImageSlider(label="Before / after (drag)", type="filepath", format="png",
                                         interactive=False, height=420, max_height=420, elem_id="compare")
            table = gr.Dataframe(headers=TABLE_HEADERS, interactive=False, label="Changed area and objects per class",
                                 elem_id="counts")
            files = gr.File(label="Downloads: mask, JSON record (and a scene's GeoJSON)", file_count="multiple",
                            interactive=False, elem_id="downloads")
            state = gr.State(None)
            run.click(detect, [up_a, up_b, ch_a, ch_b, head, opacity],
                      [caption, overlay, compare, table, summary, files, state], api_name="detect_changes")
            opacity.change(restyle, [opacity, state], [overlay, compare], api_visibility="private",
                           trigger_mode="always_last")
        if svc.offers("search"):
            _search_tab(gr, svc, guard)
        # ask / ground tabs join here when the model has those heads (svc.offers("ask"), ...)
        if svc.offers("ground"):  # change grounding: the mask of a described change
            @guard
            def ground(up_a: str | None, up_b: str | None, ch_a: str | None, ch_b: str | None, expression: str,
                       route: str, progress: Any = gr.Progress(track_tqdm=True)) -> tuple[Any, ...]:
                progress(0, desc="reading and running the model")
                res = svc.ground(_source(up_a, ch_a, "A"), _source(up_b, ch_b, "B"), expression, route)
                rows = [[i + 1, bx.y0, bx.x0, bx.y1, bx.x1, bx.area] for i, bx in enumerate(res.boxes)]
                note = (f"answered by the **{res.route}** route: {res.area.pixels} px "
                        f"({100 * res.area.fraction:.2f} % of the valid pixels), {res.components} region(s)")
                files = [p for p in (res.mask_path, res.record_path, res.geojson_path) if p]
                return res.overlay_path, note, rows, files

            with gr.Tab("Ground"):
                with gr.Row():
                    g_up_a = gr.File(label="Date A: upload", file_types=list(SUFFIXES), type="filepath",
                                     elem_id="ground_upload_a")
                    g_ch_a = gr.Dropdown(choices=choices, value=None, label="or A under --root",
                                         allow_custom_value=True, visible=bool(svc.roots))
                    g_up_b = gr.File(label="Date B: upload", file_types=list(SUFFIXES), type="filepath",
                                     elem_id="ground_upload_b")
                    g_ch_b = gr.Dropdown(choices=choices, value=None, label="or B under --root",
                                         allow_custom_value=True, visible=bool(svc.roots))
                with gr.Row():
                    g_text = gr.Textbox(label="which change?", placeholder="new buildings in the top left",
                                        elem_id="ground_text")
                    g_route = gr.Dropdown(choices=["auto", "learned", "program"], value="auto", label="route")
                    g_run = gr.Button("Segment", variant="primary", elem_id="ground_run")
                g_note = gr.Markdown(elem_id="ground_note")
                g_over = gr.Image(label="A | B with the referred change", type="filepath", interactive=False,
                                  elem_id="ground_overlay")
                g_rows = gr.Dataframe(headers=["region", "y0", "x0", "y1", "x1", "pixels"], interactive=False,
                                      elem_id="ground_boxes")
                g_files = gr.File(label="Downloads: mask, JSON record (and GeoJSON)", file_count="multiple",
                                  interactive=False)
                g_run.click(ground, [g_up_a, g_up_b, g_ch_a, g_ch_b, g_text, g_route],
                            [g_over, g_note, g_rows, g_files], api_name="ground")
        if svc.offers("ask"):
            with gr.Tab("Ask"):
                gr.Markdown("Ask about the change of the pair chosen in the *Changes* tab: the learned answer, "
                            "and the answer measured on the predicted maps with its evidence.")
                question = gr.Textbox(label="question", placeholder="how many buildings were built?",
                                      elem_id="ask_question")
                go = gr.Button("Ask", variant="primary", elem_id="ask_run")
                answer = gr.Markdown(elem_id="ask_answer")
                evidence = gr.JSON(label="measured: evidence", elem_id="ask_evidence")

                @guard
                def ask(up_a: str | None, up_b: str | None, ch_a: str | None, ch_b: str | None, head: str,
                        text: str) -> tuple[str, Any]:
                    res = svc.ask(_source(up_a, ch_a, "A"), _source(up_b, ch_b, "B"), text, head or None)
                    m = res.measured
                    said = (f"**{res.answer}** (learned, p = {res.probability:.2f}); question type "
                            f"`{res.type}`, head `{res.head}`")
                    said += (f"  \nmeasured on the predicted maps: **{m.answer}**" if m is not None else
                             "  \nmeasured: - (the model has no map of this label space)")
                    return said, (m.evidence if m is not None else None)

                go.click(ask, [up_a, up_b, ch_a, ch_b, head, question], [answer, evidence], api_name="ask")
    return demo


def _search_tab(gr: Any, svc: ChangeService, guard: Any) -> None:
    @guard
    def find(index: str, text: str, k: float) -> tuple[Any, ...]:
        res = svc.search(index, text, int(k), thumbnails=True)
        extra = res.model_extra or {}
        gallery, rows = [], []
        for h in res.results:
            hx = h.model_extra or {}
            label = f"#{h.rank} {h.score:.3f} {h.name}: {h.caption}"
            if hx.get("thumbnail_path"):
                gallery.append((hx["thumbnail_path"], label))
            frac = hx.get("change_fraction")
            ring = h.footprint
            rows.append([h.rank, round(h.score, 4), h.name, h.caption,
                         round(100 * frac, 2) if isinstance(frac, (int, float)) else None,
                         f"({ring[0][0]:.1f}, {ring[0][1]:.1f}) to ({ring[2][0]:.1f}, {ring[2][1]:.1f})" if ring else ""])
        note = f"unknown words (encoded as <unk>): {', '.join(res.unknown_words)}" if res.unknown_words else ""
        shots = extra.get("footprints_paths") or []
        files = [p for p in (extra.get("json_path"), extra.get("geojson_path")) if p]
        return gallery, rows, gr.update(value=shots[0] if shots else None, visible=bool(shots)), note, files

    with gr.Tab("Search"):
        with gr.Row():
            index = gr.Dropdown(choices=list(svc.indexes), value=next(iter(svc.indexes)), label="index",
                                elem_id="search_index")
            text = gr.Textbox(label="describe the change", placeholder="new buildings along the road",
                              elem_id="search_text")
            k = gr.Slider(1, 50, value=8, step=1, label="results")
            go = gr.Button("Search", variant="primary", elem_id="search_run")
        note = gr.Markdown()
        gallery = gr.Gallery(label="Results (A | B)", columns=4, elem_id="search_gallery")
        rows = gr.Dataframe(headers=SEARCH_HEADERS, interactive=False, elem_id="search_table")
        where = gr.Image(label="Footprints of the scene windows", type="filepath", interactive=False, visible=False)
        files = gr.File(label="Downloads: results JSON, GeoJSON", file_count="multiple", interactive=False)
        go.click(find, [index, text, k], [gallery, rows, where, note, files], api_name="search")


def launch(svc: ChangeService, host: str = "127.0.0.1", port: int = 7860, token: str | None = None,
           block: bool = True) -> Any:
    """Serve the app. With a token, the login page asks for it as the password (any user name)."""
    prev = os.environ.get("GRADIO_TEMP_DIR")
    if prev is None:  # uploads (and Gradio's copies of results) inside the output folder
        os.environ["GRADIO_TEMP_DIR"] = str(svc.out.path / "uploads")
    demo = build_app(svc)
    import gradio as gr

    theme = gr.themes.Default(font=["ui-sans-serif", "system-ui", "sans-serif"],
                              font_mono=["ui-monospace", "monospace"])  # system fonts: nothing fetched
    demo.queue(default_concurrency_limit=svc.limits.concurrency, max_size=svc.limits.queue, api_open=False)
    auth = None
    if token:
        def auth(_user: str, password: str) -> bool:
            return hmac.compare_digest(password.encode(), token.encode())
    demo.launch(server_name=host, server_port=port, auth=auth, max_file_size=svc.limits.max_upload_bytes,
                allowed_paths=[str(svc.out.path)], show_error=False, quiet=True, ssr_mode=False,
                mcp_server=False, enable_monitoring=False, footer_links=["gradio", "settings"], prevent_thread_lock=not block,
                theme=theme)
    if prev is None and not block:  # a caller that goes on in this process keeps its environment
        del os.environ["GRADIO_TEMP_DIR"]
    return demo
