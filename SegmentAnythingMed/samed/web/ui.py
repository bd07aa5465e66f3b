"""The page: a toolbar with the tool's actions, the slice controls and status, the view layout."""
from __future__ import annotations

from trame.widgets import html
from trame.widgets import vuetify3 as v3
from trame_vuetify.ui.vuetify3 import SinglePageLayout

from .uploads import UPLOAD_SUFFIXES

# text rows that never wrap: the view below keeps its place and size whatever the status says
ONE_LINE = "white-space: nowrap; overflow: hidden; text-overflow: ellipsis; min-width: 0;"
LAYOUTS = ("Axial Only", "Quad View", "Axial Primary")  # trame-slicer's LayoutManager.default_grid_configuration()


def build_ui(app) -> None:
    with SinglePageLayout(app.server, full_height=True) as layout:
        layout.title.set_text("Segment Anything")
        with layout.toolbar:
            v3.VSpacer()
            v3.VBtn("Segment Anything", click=app.activate_tool, id="tool-sam", classes="mx-1",
                    prepend_icon="mdi-selection-drag", disabled=("!opened",),
                    color=("tool_active ? 'primary' : undefined",))
            v3.VBtn("Next candidate", click=app.next_candidate, id="next-candidate", classes="mx-1",
                    disabled=("!has_preview || busy",))
            v3.VBtn("Propagate", click=app.propagate, id="propagate", classes="mx-1",
                    disabled=("!has_preview || busy",))
            v3.VBtn("Apply", click=app.apply, id="apply", classes="mx-1", disabled=("!has_preview || busy",))
            v3.VBtn("Stop", click=app.stop, id="stop", classes="mx-1", v_if=("busy",), color="warning")
            v3.VBtn("Cancel", click=app.cancel, id="cancel", classes="mx-1")
            v3.VBtn(icon="mdi-undo", click=app.undo, id="undo", disabled=("!can_undo",))
            v3.VBtn(icon="mdi-redo", click=app.redo, id="redo", disabled=("!can_redo",))
            v3.VBtn("Save", click=app.save, id="save", classes="mx-1", disabled=("!opened",),
                    prepend_icon="mdi-content-save")
            download = app.server.controller.trigger_name(app.download)
            v3.VBtn(icon="mdi-download", id="download", disabled=("!opened",),
                    click=f"utils.download(download_name, trigger('{download}'), 'application/octet-stream')")
        with layout.content:
            with html.Div(style="display: flex; flex-direction: column; height: 100%;"):
                with html.Div(classes="d-flex align-center px-4 pt-2", style="gap: 12px; flex: 0 0 auto;"):
                    v3.VSelect(v_model=("volume",), items=("volumes",), label="Volume", density="compact",
                               hide_details=True, style="min-width: 220px; max-width: 320px;", id="volume-select")
                    v3.VBtn("Open", click=app.open_selected, id="open-volume", size="small")
                    v3.VFileInput(label="Upload a volume", accept=",".join(UPLOAD_SUFFIXES), density="compact",
                                  hide_details=True, style="min-width: 200px; max-width: 260px;", id="upload",
                                  prepend_icon="mdi-upload",
                                  change=f"trigger('{app.server.controller.trigger_name(app.upload)}', "
                                         f"[$event.target.files])")
                    v3.VSelect(v_model=("reference",), v_if=("references.length",), items=("references",),
                               label="Reference segment", density="compact", hide_details=True,
                               style="max-width: 420px;",
                               id="reference-select")
                    v3.VBtn("Compare", click=app.compare, id="compare", disabled=("!opened",), size="small",
                            v_if=("references.length",))
                    html.Span("{{ evaluation }}", id="evaluation", style=ONE_LINE)
                with html.Div(classes="d-flex align-center px-4",
                              style="gap: 16px; flex: 0 0 auto; height: 56px;"):
                    v3.VSlider(v_model=("slice_index",), min=0, max=("slice_count - 1",), step=1,
                               label="Slice", hide_details=True, disabled=("!opened",), style="max-width: 400px;")
                    v3.VTextField(v_model_number=("slice_index",), type="number", density="compact",
                                  hide_details=True, style="max-width: 90px;", id="slice-index",
                                  disabled=("!opened",))
                    v3.VSelect(v_model=("layout",), items=(list(LAYOUTS),), label="Views", density="compact",
                               hide_details=True, style="max-width: 170px;", id="layout-select")
                    html.Span("{{ status }}", id="status", title=("status",),
                              style=ONE_LINE + " flex: 1 1 auto;")
                    html.Span("{{ progress }}", id="progress")
                with html.Div(classes="px-4", style="flex: 0 0 auto; font-size: 0.85em; " + ONE_LINE):
                    html.Span("Box: {{ box || 'none' }}", id="box")
                    html.Span(" | Saved: {{ saved || 'not yet' }}", id="saved")
                with html.Div(style="flex: 1 1 auto; position: relative;", id="views"):
                    app.layout_manager.initialize_layout_grid(layout)

