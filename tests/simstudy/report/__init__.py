"""Tests of the plots and the HTML report."""
