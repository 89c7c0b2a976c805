"""wsdlab.train"""
