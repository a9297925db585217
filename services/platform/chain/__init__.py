"""The chain port (``port.py``) and its adapters: Geth JSON-RPC and in-process py-evm."""
