"""Conditioning modules, one per paper (CameraCtrl II first)."""
