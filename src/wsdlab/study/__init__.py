"""wsdlab.study"""
