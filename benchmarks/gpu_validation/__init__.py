"""GPU validation suite: does effbench's GPU energy hold on real hardware? (see README.md)"""
