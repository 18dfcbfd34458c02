"""The recommendation report: trial records in, report.md / report.html / plots out.

`reports.build.build_report(sweep_dir)` is the entry point; `reports.recommend` holds the decision
rule as a pure function. Reads only sweep.json and trials/*.json; imports only `advisor` of ours.
"""
