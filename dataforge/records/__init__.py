"""Structured records (EHR, financial filings) into canonical, de-identified Arrow tables and text."""
