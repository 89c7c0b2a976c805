"""wsdlab.report"""
