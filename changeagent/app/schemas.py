"""The structured results of the app's functions (SPEC §10): one pydantic model per tool, used as the
MCP tools' output schemas and by the web app alike. Paths are absolute and lie in the output folder."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field


class ClassChange(BaseModel):
    """One change class of the head (background / unchanged is not listed)."""

    name: str = Field(description="class name, e.g. 'building'")
    changed_fraction: float = Field(description="share of the valid pixels predicted as this class, 0..1")
    pixels: int = Field(description="pixels predicted as this class")
    objects: int = Field(description="8-connected components of this class with at least min_area pixels")


class DetectResult(BaseModel):
    """`detect_changes`: the mask written under the output folder, per-class areas and object counts."""

    mask_path: str = Field(description="class mask: palette PNG, or GeoTIFF with the input's CRS and transform")
    overlay_path: str = Field(description="PNG preview: date B with the changed classes tinted")
    classes: list[ClassChange] = Field(description="per change class: area and object count")
    changed_fraction: float = Field(description="share of the valid pixels in any change class, 0..1")
    change_fraction: float = Field(description="share of the valid pixels the binary change head marks changed")
    caption: str = Field(description="the change caption of the pair (of the whole scene, area-resampled, for scenes)")
    head: str = Field(description="dataset whose head decoded the mask")
    mode: Literal["pair", "scene"] = Field(description="pair: read whole; scene: GeoTIFF read and written by windows")
    width: int
    height: int
    valid_pixels: int = Field(description="pixels valid (not nodata) in both dates")
    min_area: int = Field(description="smallest object counted, in pixels")
    record_path: str = Field(description="the JSON record of this result (as `changeagent predict` writes)")
    geojson_path: str | None = Field(None, description="scenes: per-window captions with footprints (GeoJSON)")
    extra_masks: dict[str, str] = Field(default_factory=dict,
                                        description="further class maps, e.g. SECOND land cover 'from'/'to'")


class DescribeResult(BaseModel):
    """`describe`: the change caption."""

    caption: str


class CountResult(BaseModel):
    """`count`: objects of one class."""

    count: int = Field(description="8-connected components of the class with at least min_area pixels")
    cls: str = Field(description="the class counted")
    min_area: int


class SearchHit(BaseModel):
    """One search result, as `changeagent search --json` writes it (further keys of the index item kept)."""

    model_config = {"extra": "allow"}

    rank: int
    name: str
    score: float = Field(description="cosine similarity of the query and the item")
    caption: str = Field(description="the item's generated caption")
    index: str = Field(description="the index folder the item is from")
    footprint: list[list[float]] | None = Field(None, description="scene windows: polygon ring in the raster CRS")


class SearchResult(BaseModel):
    """`search`: `changeagent search --json` over one configured index."""

    model_config = {"extra": "allow"}

    query: str
    unknown_words: list[str] = Field(description="query words outside the model's vocabulary (encoded as <unk>)")
    results: list[SearchHit]

    @classmethod
    def of(cls, raw: dict[str, Any]) -> SearchResult:
        return cls.model_validate(raw)


class GroundBox(BaseModel):
    """One connected region of a grounding mask: pixel box, y1/x1 exclusive."""

    y0: int
    x0: int
    y1: int
    x1: int
    area: int = Field(description="pixels of the region")


class GroundArea(BaseModel):
    pixels: int = Field(description="pixels of the mask")
    fraction: float = Field(description="share of the valid pixels, 0..1")


class GroundResult(BaseModel):
    """`ground`: the mask of the change an expression describes (`changeagent ground`'s record)."""

    mask_path: str = Field(description="binary mask (1 = referred change, 255 = nodata): PNG, or GeoTIFF with the "
                                       "input's CRS and transform for GeoTIFF inputs")
    overlay_path: str = Field(description="PNG preview: A beside B with the mask tinted")
    record_path: str = Field(description="the JSON record (as `changeagent ground` writes it)")
    geojson_path: str | None = Field(None, description="GeoTIFF inputs: the mask's polygons in the input CRS")
    expression: str
    route: Literal["learned", "program"] = Field(description="learned: the grounding head; program: the parsed "
                                                             "expression cut from the model's class maps")
    area: GroundArea
    components: int = Field(description="8-connected regions of at least 6 pixels")
    boxes: list[GroundBox] = Field(description="those regions' pixel boxes")
    head: str = Field(description="dataset whose label space read the expression")
class MeasuredAnswer(BaseModel):
    """The answer rules (SPEC §8) applied to the model's own predicted maps: the auditable answer."""

    answer: str | None = Field(description="the rules' answer; null when they cannot answer (evidence.error says why)")
    evidence: dict[str, Any] = Field(description="what the rules counted: class areas per date, components, cells")


class AskResult(BaseModel):
    """`ask`: the qa head's answer to a question about the change, and the measured one with its evidence."""

    question: str
    answer: str = Field(description="the learned answer (the qa head's most probable one of the closed set)")
    probability: float = Field(description="the qa head's probability of that answer, 0..1")
    type: str = Field(description="the CDVQA question type the question was understood as, e.g. change_count")
    measured: MeasuredAnswer | None = Field(description="the rules on the predicted maps (null: no map of the "
                                                        "question's label space)")
    head: str = Field(description="dataset whose head decoded the maps and whose label space the question is in")
