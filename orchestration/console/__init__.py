"""The console: the pages people use, the data behind them and /metrics. It may import
every layer; nothing imports it (its URLs are wired in orchestrator_site/urls.py)."""
