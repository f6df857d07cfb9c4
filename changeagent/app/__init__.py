"""The app layer above inference: one service (`service.ChangeService`) and its two faces, the web app
(`web.py`, `changeagent serve`) and the Model Context Protocol server (`mcp_server.py`, `changeagent mcp`).

Imports run one way: app -> inference -> models. Nothing here is imported by `changeagent --help`.
"""
