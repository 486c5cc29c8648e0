"""Dashboard widgets. Each one renders a section of `DashboardState` via `update_from(state)`."""
